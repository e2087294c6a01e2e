"""Controls for BC+RLA's latent targets: what the latent head learns from when its targets carry no information
about the frame's future (shuffled z), or come from an RLA that never trained (untrained RLA).

If BC+RLA beats BC by the same amount with these targets, the gain is not the RLA's: it comes from the extra
frames, the extra head or the regularisation. ``scripts/bc_rla_controls.py`` trains and scores them beside BC and
BC+RLA on the same seeds.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from rla_pipeline.rl.bc import latent_targets


def trained_z(rla, cache, h: int) -> Callable[[str], torch.Tensor]:
    """The frozen RLA's z targets of an episode (what BC+RLA trains on)."""
    rla = rla.eval()
    return lambda eid: latent_targets(rla, cache.tokens(eid), h=h)


def untrained_like(rla, seed: int = 0):
    """The same model class built again from ``rla.config`` with weights drawn at initialisation (``seed``), the
    trained model's buffers (token statistics: the same input normalisation) copied in: the RLA's architecture
    without its training."""
    torch.manual_seed(seed)
    fresh = type(rla)(rla.config)
    params = {k for k, _ in fresh.named_parameters()}
    saved = {k: v for k, v in rla.state_dict().items() if k not in params}  # persistent buffers only
    fresh.load_state_dict(saved, strict=False)
    return fresh.eval()


def shuffled_z(z_of: Callable[[str], torch.Tensor], episode_ids: Sequence[str], task_of: dict[str, str],
               length_of: Callable[[str], int], seed: int = 0) -> Callable[[str], torch.Tensor]:
    """z targets of ANOTHER episode of the same task (a fixed random derangement per task; with one episode in a
    task, that episode's z reversed in time), cut or padded (last row repeated) to the episode's own length: the
    targets keep their marginal statistics but say nothing about this frame's future. ``length_of``: an episode's
    frame count (e.g. its cached tokens' first dimension), so only the donor's z is computed."""
    rng = np.random.default_rng(seed)
    donor: dict[str, str] = {}
    by_task: dict[str, list[str]] = {}
    for e in sorted(episode_ids):
        by_task.setdefault(task_of[e], []).append(e)
    for eids in by_task.values():
        if len(eids) == 1:
            donor[eids[0]] = eids[0]
            continue
        shift = int(rng.integers(1, len(eids)))  # a cyclic shift >= 1: nobody is their own donor
        order = list(rng.permutation(len(eids)))
        for i, j in enumerate(order):
            donor[eids[j]] = eids[order[(i + shift) % len(eids)]]

    def z(eid: str) -> torch.Tensor:
        own_len = int(length_of(eid))
        d = donor[eid]
        zd = z_of(d)
        if d == eid:
            zd = zd.flip(0)
        if zd.shape[0] >= own_len:
            return zd[:own_len].clone()
        return torch.cat([zd, zd[-1:].expand(own_len - zd.shape[0], *zd.shape[1:])], 0)

    z.donor = donor  # type: ignore[attr-defined]
    return z
