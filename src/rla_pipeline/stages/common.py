"""What several stages share: episode ids of a split, token-pair datasets, token statistics, trainer configs.

One helper per job: the RLA, the world models and the tuning trials all build their data through these.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rla_pipeline.utils.config import check_keys


def episode_ids(splits: pd.DataFrame, split: str) -> list[str]:
    """Sorted episode ids of one split (train / val / heldout_task) of ``episode_splits``."""
    return sorted(splits.loc[splits["split"] == split, "episode_id"])


def action_episode_ids(cache, splits: pd.DataFrame, split: str) -> list[str]:
    """Sorted episode ids of one split whose cached steps carry actions (what an action-conditioned model needs)."""
    return [e for e in episode_ids(splits, split) if "action" in cache.steps(e)]


def token_pair_datasets(cache, episode_index: pd.DataFrame, train_ids: list[str], val_ids: list[str], samples):
    """-> (train TokenPairDataset, val TokenPairDataset | None) over cached tokens; ``samples``: SampleConfig."""
    from rla_pipeline.features.samples import TokenPairDataset

    train_ds = TokenPairDataset(cache, episode_index, train_ids, samples)
    val_ds = TokenPairDataset(cache, episode_index, val_ids, samples) if val_ids else None
    return train_ds, val_ds


def sample_token_stats(cache, episode_ids: list[str], max_frames: int, seed: int = 0):
    """Per-dim token mean/std (D,) over up to ``max_frames`` frames of ``episode_ids`` (picked by ``seed``)."""
    import torch

    from rla_pipeline.models.rla import token_stats

    frames = [(e, t) for e in episode_ids for t in range(cache.tokens(e).shape[0])]
    pick = np.random.default_rng(seed).permutation(len(frames))[:max_frames]
    tok = np.stack([np.asarray(cache.tokens(frames[i][0])[frames[i][1]], dtype=np.float32) for i in sorted(pick)])
    return token_stats(torch.from_numpy(tok))


def checkpoint_dir(checkpoint_root: str | None, *parts: str) -> str | None:
    """``<checkpoint_root>/<parts...>``: every stage's checkpoints under the one root (None: no checkpoints)."""
    return str(Path(checkpoint_root, *parts)) if checkpoint_root else None


def check_trainer_block(block: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """A stage's trainer block (TrainerConfig fields but run_name/seed/device/checkpoint_dir, which the stage sets)."""
    from rla_pipeline.training.trainer import TrainerConfig

    block = check_keys(TrainerConfig, block, where=where)
    owned = sorted({"run_name", "checkpoint_dir"} & set(block))
    if owned:
        raise ValueError(f"{where}: {owned} are set by the stage (checkpoints: the global checkpoint_root)")
    return block


def trainer_config(block: dict[str, Any], *, run_name: str, device: str, checkpoint_dir: str | None, **fixed):
    """TrainerConfig from a stage's trainer block; ``fixed`` (seed, progress defaults, ...) under the block's keys
    only where named ``default_*``, over them otherwise."""
    from rla_pipeline.training.trainer import TrainerConfig

    defaults = {k[len("default_"):]: v for k, v in fixed.items() if k.startswith("default_")}
    over = {k: v for k, v in fixed.items() if not k.startswith("default_")}
    return TrainerConfig.from_dict({"device": device, **defaults, **block, "run_name": run_name,
                                    "checkpoint_dir": checkpoint_dir, **over})


@dataclass
class EpisodeChoiceConfig:
    """Which episodes the policies learn from (per task; the paper: 50 labelled demos, 150 for PushT, + up to 1000
    pixel-only trajectories)."""

    n_labelled_per_task: int = 10
    n_val_per_task: int = 1
    max_actionless_per_task: int = 40
    extra_demos_as_actionless: bool = True  # demos beyond labelled+val count as pixel-only videos (labels hidden)
    frame_stride: int = 1  # every k-th frame is a training sample


def action_dim_of(index: pd.DataFrame, eids) -> int:
    """The one action width of the labelled episodes ``eids`` (ValueError when they differ)."""
    dims = index.set_index("episode_id").loc[list(eids), "action_dim"].dropna().astype(int).unique()
    if len(dims) != 1:
        raise ValueError(f"labelled demos must share one action width, found {sorted(dims)}")
    return int(dims[0])
