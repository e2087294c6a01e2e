"""Nodes of the ``rla`` pipeline: thin wrappers over models/rla.py, training/trainer.py and evaluation/metrics.py.

Torch is imported inside the functions so ``kedro registry list`` stays fast.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rla_pipeline.utils.config import from_dict

logger = logging.getLogger(__name__)


@dataclass
class SplitConfig:
    """How episodes are split. heldout_task: a task kept out of training entirely (claim 1.2; None = none).
    val_fraction: share of each seen task's episodes kept for validation (at least 1 when the task has >= 2)."""

    heldout_task: str | None = "PokeCube-v1"
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class RLAEvalConfig:
    """Evaluation: h buckets (frames), pair stride, temporal progression horizon and a grid (alphas)."""

    horizons: list[int] = field(default_factory=lambda: [2, 5, 10, 15])
    stride: int = 4
    batch_size: int = 64
    progression_h: int = 10
    alphas: list[float] = field(default_factory=lambda: [i / 10 for i in range(11)])
    progression_max_pairs: int = 64


@dataclass
class RLAParams:
    """``params:rla``: split, samples (features.samples.SampleConfig), model (RLAConfig), trainer (TrainerConfig),
    normalise_tokens, stats_max_frames (frames sampled for the token mean/std), eval."""

    split: SplitConfig = field(default_factory=SplitConfig)
    samples: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    normalise_tokens: bool = True
    stats_max_frames: int = 2000
    eval: RLAEvalConfig = field(default_factory=RLAEvalConfig)

    @classmethod
    def from_dict(cls, d: dict | None) -> "RLAParams":
        return from_dict(cls, d, where="rla")


def split_episodes(episode_index: pd.DataFrame, feature_manifest: pd.DataFrame, params: dict, seed: int
                   ) -> pd.DataFrame:
    """Deterministic split (by ``seed``) of the cached episodes: train/val per seen task, heldout_task for the rest.

    -> DataFrame(episode_id, task, kind, split).
    """
    cfg = RLAParams.from_dict(params).split
    df = episode_index[episode_index["episode_id"].isin(feature_manifest["episode_id"])]
    df = df[["episode_id", "task", "kind"]].sort_values("episode_id").reset_index(drop=True)
    df["split"] = "train"
    rng = np.random.default_rng(seed)
    for task, g in df.groupby("task", sort=True):
        if cfg.heldout_task is not None and task == cfg.heldout_task:
            df.loc[g.index, "split"] = "heldout_task"
            continue
        n_val = int(round(cfg.val_fraction * len(g)))
        if cfg.val_fraction > 0 and len(g) >= 2:
            n_val = max(1, n_val)
        val_idx = rng.permutation(g.index.to_numpy())[:n_val]
        df.loc[val_idx, "split"] = "val"
    if cfg.heldout_task is not None and not (df["split"] == "heldout_task").any():
        logger.warning("held-out task %r has no cached episodes: rla_generalisation will be empty", cfg.heldout_task)
    logger.info("episode splits: %s", df.groupby("split").size().to_dict())
    return df


def _ids(splits: pd.DataFrame, split: str) -> list[str]:
    return sorted(splits.loc[splits["split"] == split, "episode_id"])


def sample_token_stats(cache, episode_ids: list[str], max_frames: int, seed: int = 0):
    """Per-dim token mean/std (D,) over up to ``max_frames`` frames of ``episode_ids`` (evenly picked)."""
    import torch

    from rla_pipeline.models.rla import token_stats

    frames = [(e, t) for e in episode_ids for t in range(cache.tokens(e).shape[0])]
    pick = np.random.default_rng(seed).permutation(len(frames))[:max_frames]
    tok = np.stack([np.asarray(cache.tokens(frames[i][0])[frames[i][1]], dtype=np.float32) for i in sorted(pick)])
    return token_stats(torch.from_numpy(tok))


def train_rla(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame, params: dict,
              device: str):
    """Train the RLA autoencoder on the train split (all kinds: the RLA needs no actions) -> trained model."""
    from rla_pipeline.features.samples import SampleConfig, TokenPairDataset
    from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder, rla_loss
    from rla_pipeline.training.trainer import TrainerConfig, train

    p = RLAParams.from_dict(params)
    samples = SampleConfig.from_dict(p.samples)
    train_ids, val_ids = _ids(episode_splits, "train"), _ids(episode_splits, "val")
    train_ds = TokenPairDataset(feature_cache, episode_index, train_ids, samples)
    val_ds = TokenPairDataset(feature_cache, episode_index, val_ids, samples) if val_ids else None
    model = ResidualLatentActionAutoencoder(
        RLAConfig.from_dict({"num_tokens": train_ds.num_tokens, "token_dim": train_ds.token_dim, **p.model})
    )
    if p.normalise_tokens:
        model.set_token_stats(*sample_token_stats(feature_cache, train_ids, p.stats_max_frames, samples.seed))
    trainer_cfg = TrainerConfig.from_dict({"run_name": "rla", "device": device, **p.trainer})
    result = train(model, rla_loss, train_ds, val_ds, trainer_cfg)
    logger.info("RLA final validation: %s", result.final_val)
    return result.model


def evaluate_rla(rla_model, feature_cache, episode_splits: pd.DataFrame, params: dict
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """-> (rla_metrics on val episodes of seen tasks, rla_generalisation on the held-out task,
    rla_temporal_progression per pair on val episodes)."""
    from rla_pipeline import tracking
    from rla_pipeline.evaluation.metrics import rla_reconstruction, temporal_progression

    e = RLAParams.from_dict(params).eval
    seen = rla_reconstruction(rla_model, feature_cache, _ids(episode_splits, "val"), e.horizons, e.stride,
                              e.batch_size, split="val")
    unseen = rla_reconstruction(rla_model, feature_cache, _ids(episode_splits, "heldout_task"), e.horizons,
                                e.stride, e.batch_size, split="heldout_task")
    prog = temporal_progression(rla_model, feature_cache, _ids(episode_splits, "val"), e.progression_h, e.alphas,
                                e.stride, e.progression_max_pairs)
    metrics = {}
    for name, table in (("rla_val", seen), ("rla_heldout_task", unseen)):
        for row in table.itertuples():
            metrics[f"{name}.h{row.h}.l1"] = row.rla_l1
            metrics[f"{name}.h{row.h}.copy_l1"] = row.copy_l1
    if len(prog):
        metrics["rla_temporal_progression.spearman_mean"] = float(prog["spearman"].mean())
    tracking.log_metrics(metrics)
    logger.info("RLA val:\n%s\nheld-out task:\n%s\nprogression spearman mean: %s", seen, unseen,
                metrics.get("rla_temporal_progression.spearman_mean"))
    return seen, unseen, prog
