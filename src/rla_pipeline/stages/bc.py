"""The actionless-BC stage (paper Table 2): BC-ResNet on labelled demos vs BC+RLA.

BC+RLA is the same policy plus a linear latent head, also trained on actionless videos with z targets from the
frozen RLA encoder. Both get the same episodes, seed, initial weights, data order and budget. No Kedro here.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd
import torch

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
    but run_name/seed/device/checkpoint_dir); labelled_fraction (BC+RLA: labelled frames repeated to be at least
    this share of samples); use_mask (multiply frames by the foreground mask; then evaluation.sim.mask_images)."""

    episodes: EpisodeChoiceConfig = field(default_factory=EpisodeChoiceConfig)
    policy: BCResNetConfig = field(default_factory=BCResNetConfig)
    loss: BCLoss = field(default_factory=BCLoss)
    trainer: dict[str, Any] = field(default_factory=dict)
    labelled_fraction: float = 0.5
    use_mask: bool = False

    def __post_init__(self) -> None:
        self.trainer = check_trainer_block(self.trainer, "actionless_bc.trainer")

    @classmethod
    def from_dict(cls, d: "dict | ActionlessBCConfig | None") -> "ActionlessBCConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="actionless_bc")


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
    size = pconf.image_size
    train_eps = _image_episodes(store, index, sel.labelled, tasks, size, cfg.use_mask, True, z_of)
    if with_latent:
        train_eps += _image_episodes(store, index, sel.actionless, tasks, size, cfg.use_mask, False, z_of)
    val_eps = _image_episodes(store, index, sel.val, tasks, size, cfg.use_mask, True) if sel.val else []
    latent_shape = (pconf.latent_tokens, pconf.latent_dim) if with_latent else None
    train_ds = ImageChunkDataset(train_eps, pconf.chunk, A, stride=e.frame_stride,
                                 labelled_fraction=cfg.labelled_fraction if with_latent else 0.0,
                                 latent_shape=latent_shape)
    val_ds = ImageChunkDataset(val_eps, pconf.chunk, A, latent_shape=latent_shape) if val_eps else None
    logger.info("%s: %d labelled + %d actionless samples (%d labelled, %d actionless episodes)", run_name,
                train_ds.num_labelled, train_ds.num_unlabelled, len(sel.labelled),
                len(sel.actionless) if with_latent else 0)
    torch.manual_seed(seed)  # same initial weights for BC and BC+RLA (the latent head is created last)
    policy = BCResNetPolicy(pconf)
    loss = cfg.loss
    if not with_latent:
        loss = dataclasses.replace(loss, latent_l1_weight=0.0, latent_mse_weight=0.0)
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
