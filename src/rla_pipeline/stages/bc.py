"""The actionless-BC stage (paper Table 2): BC-ResNet on labelled demos vs BC+RLA.

BC+RLA is the same policy plus a linear latent head, also trained on actionless videos with z targets from the
frozen RLA encoder. Both get the same labelled episodes, seed, initial weights and steps, and the SAME labelled
batches in the same order: a training item is one labelled frame (the one the shared sampler picks) plus, for
BC+RLA only, ``actionless_per_labelled`` actionless frames ADDED on top (drawn from (seed, epoch, index)). So BC+RLA
sees every labelled sample BC sees, when BC sees it, and the actionless videos come in addition, never instead.
No Kedro here.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from rla_pipeline.episodes.format import episode_actions
from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy
from rla_pipeline.rl.bc import BCLoss, ImageChunkDataset, latent_targets, resize_frames, select_episodes
from rla_pipeline.stages.common import (
    EpisodeChoiceConfig, action_dim_of, check_trainer_block, checkpoint_dir, trainer_config,
)
from rla_pipeline.utils.config import from_dict

logger = logging.getLogger(__name__)


@dataclass
class ActionlessBCConfig:
    """``params:actionless_bc``: episodes; policy (BCResNetConfig; action_dim/tasks/latent shape come from the
    data and the RLA); loss (BCLoss; latent weights: paper 0.05 L1 + 0.05 MSE); trainer (TrainerConfig fields
    but run_name/seed/device/checkpoint_dir); actionless_per_labelled (BC+RLA: actionless frames added to each
    labelled one, so a batch of B labelled frames carries B * k actionless ones on top); use_mask (multiply frames
    by the foreground mask; then evaluation.sim.mask_images)."""

    episodes: EpisodeChoiceConfig = field(default_factory=EpisodeChoiceConfig)
    policy: BCResNetConfig = field(default_factory=BCResNetConfig)
    loss: BCLoss = field(default_factory=BCLoss)
    trainer: dict[str, Any] = field(default_factory=dict)
    actionless_per_labelled: int = 1
    use_mask: bool = False

    def __post_init__(self) -> None:
        self.trainer = check_trainer_block(self.trainer, "actionless_bc.trainer")
        if self.actionless_per_labelled < 0:
            raise ValueError("actionless_bc.actionless_per_labelled must be >= 0")

    @classmethod
    def from_dict(cls, d: "dict | ActionlessBCConfig | None") -> "ActionlessBCConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="actionless_bc")


class LabelledPlusActionless(Dataset):
    """Item i = labelled item i, then ``extra`` actionless items, stacked on a leading group axis (1 + extra, ...).

    The length is the labelled set's, so the trainer's sampler (seeded, over len(dataset)) picks the same labelled
    frames in the same order whatever ``extra`` is; the actionless ones are drawn from (seed, epoch, i).
    """

    def __init__(self, labelled: ImageChunkDataset, actionless: ImageChunkDataset | None, extra: int, seed: int):
        if extra and actionless is None:
            raise ValueError("actionless samples requested but there are no actionless episodes")
        self.labelled, self.actionless, self.extra, self.seed, self.epoch = labelled, actionless, extra, seed, 0
        # the trainer's checkpoint/data key: everything that decides what the items are
        self.fingerprint = "|".join([labelled.fingerprint, getattr(actionless, "fingerprint", "none"),
                                     str(extra), str(seed)])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labelled)

    def extra_indices(self, index: int) -> list[int]:
        if not self.extra:
            return []
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return rng.integers(0, len(self.actionless), size=self.extra).tolist()

    def __getitem__(self, index: int) -> dict:
        items = [self.labelled[index]] + [self.actionless[j] for j in self.extra_indices(index)]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@dataclass
class GroupedBCLoss:
    """BCLoss over batches of :class:`LabelledPlusActionless` items: (B, G, ...) -> (G * B, ...), labelled first."""

    inner: BCLoss

    def __call__(self, model, batch: dict):
        flat = {k: v.transpose(0, 1).flatten(0, 1) for k, v in batch.items()}
        return self.inner(model, flat)


def _image_episodes(store, index, eids, tasks, size, use_mask, with_actions, z_of=None) -> list[dict]:
    rows = index.set_index("episode_id")
    eps = []
    for eid in eids:
        frames = store.read_frames(eid)
        masks = store.read_masks(eid) if use_mask else None
        ep = {"frames": resize_frames(frames, size, masks), "task": tasks.index(rows.loc[eid, "task"])}
        if with_actions:
            ep["actions"] = episode_actions(store.read_steps(eid))
        if z_of is not None:
            ep["z"] = z_of(eid)
        eps.append(ep)
    return eps


def bc_datasets(store, index, tasks, cfg: ActionlessBCConfig, sel, pconf, action_dim: int, seed: int, z_of=None):
    """-> (train LabelledPlusActionless, val LabelledPlusActionless | None). ``z_of`` None: BC (labelled only);
    else BC+RLA (z targets on every frame, ``cfg.actionless_per_labelled`` actionless frames added per item)."""
    with_latent = z_of is not None
    size, e = pconf.image_size, cfg.episodes
    latent_shape = (pconf.latent_tokens, pconf.latent_dim) if with_latent else None
    lab_eps = _image_episodes(store, index, sel.labelled, tasks, size, cfg.use_mask, True, z_of)
    labelled = ImageChunkDataset(lab_eps, pconf.chunk, action_dim, stride=e.frame_stride, latent_shape=latent_shape)
    actionless, extra = None, 0
    if with_latent and sel.actionless and cfg.actionless_per_labelled:
        act_eps = _image_episodes(store, index, sel.actionless, tasks, size, cfg.use_mask, False, z_of)
        actionless = ImageChunkDataset(act_eps, pconf.chunk, action_dim, stride=e.frame_stride,
                                       latent_shape=latent_shape)
        extra = cfg.actionless_per_labelled
    train = LabelledPlusActionless(labelled, actionless, extra, seed)
    val = None
    if sel.val:
        val_eps = _image_episodes(store, index, sel.val, tasks, size, cfg.use_mask, True)
        val = LabelledPlusActionless(ImageChunkDataset(val_eps, pconf.chunk, action_dim, latent_shape=latent_shape),
                                     None, 0, seed)
    return train, val


def train_bc_policy(store, index: pd.DataFrame, tasks: Sequence[str], params, seed: int, device: str,
                    run_name: str, cache=None, rla=None, checkpoint_root: str | None = None):
    """BC-ResNet (``rla`` None) or BC+RLA (``rla`` + ``cache``). Returns (policy, history DataFrame).

    Checkpoints in ``<checkpoint_root>/actionless_bc/<run_name>``.
    """
    from rla_pipeline.training.trainer import train

    cfg = ActionlessBCConfig.from_dict(params)
    tasks = list(tasks)
    e = cfg.episodes
    sel = select_episodes(index, tasks, e.n_labelled_per_task, e.n_val_per_task, e.max_actionless_per_task,
                          e.extra_demos_as_actionless)
    A = action_dim_of(index, sel.labelled)
    with_latent = rla is not None
    pconf = dataclasses.replace(cfg.policy, action_dim=A, num_tasks=len(tasks), task_names=tasks)
    if with_latent:
        pconf = dataclasses.replace(pconf, latent_tokens=rla.config.latent_tokens, latent_dim=rla.config.latent_dim)
    z_of = None
    if with_latent:
        rla = rla.eval()
        z_of = lambda eid: latent_targets(rla, cache.tokens(eid), h=pconf.chunk)  # noqa: E731
    train_ds, val_ds = bc_datasets(store, index, tasks, cfg, sel, pconf, A, seed, z_of)
    logger.info("%s: %d labelled samples + %d actionless added to each (%d labelled, %d actionless episodes)",
                run_name, len(train_ds), train_ds.extra, len(sel.labelled), len(sel.actionless) if with_latent else 0)
    torch.manual_seed(seed)  # same initial weights for BC and BC+RLA (the latent head is created last)
    policy = BCResNetPolicy(pconf)
    loss = cfg.loss
    if not with_latent:
        loss = dataclasses.replace(loss, latent_l1_weight=0.0, latent_mse_weight=0.0)
    loss = GroupedBCLoss(loss)
    tcfg = trainer_config(cfg.trainer, run_name=run_name, device=device, seed=seed, default_progress=False,
                          checkpoint_dir=checkpoint_dir(checkpoint_root, "actionless_bc", run_name))
    result = train(policy, loss, train_ds, val_ds, tcfg)
    return result.model, result.history.assign(run=run_name)


def train_bc(episodes, episode_index: pd.DataFrame, params: dict, tasks: list[str], seed: int, device: str,
             checkpoint_root: str | None = None):
    """Labelled demos -> BC-ResNet policy (+ its training history)."""
    return train_bc_policy(episodes, episode_index, tasks, params, seed, device, run_name="bc_policy",
                           checkpoint_root=checkpoint_root)


def train_bc_rla(episodes, episode_index: pd.DataFrame, feature_cache, rla_model, params: dict, tasks: list[str],
                 seed: int, device: str, checkpoint_root: str | None = None):
    """Labelled demos + actionless videos (z targets from the frozen RLA encoder) -> BC+RLA policy (+ history)."""
    return train_bc_policy(episodes, episode_index, tasks, params, seed, device, run_name="bc_rla_policy",
                           cache=feature_cache, rla=rla_model, checkpoint_root=checkpoint_root)
