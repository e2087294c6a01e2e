"""The RLA autoencoder stage as plain functions: episode split, datasets, training, evaluation.

Used by the ``rla`` Kedro pipeline (thin nodes), the ``tune`` study (each trial trains through
:func:`build_rla_datasets` and the shared trainer) and the ``world_model`` stage (token statistics).
Floor: above ``features``/``models``/``training``/``evaluation``, below ``pipelines``. No Kedro here.
Torch is imported inside the functions so importing this module stays cheap.
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
    use_tuned_shape: bool = False  # true: latent tokens x dims from the tune pipeline's rla_tuned_shape
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


def episode_ids(splits: pd.DataFrame, split: str) -> list[str]:
    """Sorted episode ids of one split (train / val / heldout_task)."""
    return sorted(splits.loc[splits["split"] == split, "episode_id"])


def sample_token_stats(cache, episode_ids: list[str], max_frames: int, seed: int = 0):
    """Per-dim token mean/std (D,) over up to ``max_frames`` frames of ``episode_ids`` (evenly picked)."""
    import torch

    from rla_pipeline.models.rla import token_stats

    frames = [(e, t) for e in episode_ids for t in range(cache.tokens(e).shape[0])]
    pick = np.random.default_rng(seed).permutation(len(frames))[:max_frames]
    tok = np.stack([np.asarray(cache.tokens(frames[i][0])[frames[i][1]], dtype=np.float32) for i in sorted(pick)])
    return token_stats(torch.from_numpy(tok))


def build_rla_datasets(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame, params: dict):
    """-> (train TokenPairDataset, val TokenPairDataset | None) over the train/val splits (all kinds: no actions needed)."""
    from rla_pipeline.features.samples import SampleConfig, TokenPairDataset

    p = RLAParams.from_dict(params)
    samples = SampleConfig.from_dict(p.samples)
    train_ids, val_ids = episode_ids(episode_splits, "train"), episode_ids(episode_splits, "val")
    if not train_ids:
        raise ValueError("episode_splits has no train episodes: ingest more episodes or lower rla.split.val_fraction")
    train_ds = TokenPairDataset(feature_cache, episode_index, train_ids, samples)
    val_ds = TokenPairDataset(feature_cache, episode_index, val_ids, samples) if val_ids else None
    return train_ds, val_ds


def build_rla_model(feature_cache, train_ds, train_ids: list[str], params: dict, model_overrides: dict | None = None):
    """A fresh RLA autoencoder sized from the data (N, D) and ``params.model`` (+ overrides), token stats set."""
    from rla_pipeline.features.samples import SampleConfig
    from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder

    p = RLAParams.from_dict(params)
    model_cfg = {"num_tokens": train_ds.num_tokens, "token_dim": train_ds.token_dim, **p.model, **(model_overrides or {})}
    model = ResidualLatentActionAutoencoder(RLAConfig.from_dict(model_cfg))
    if p.normalise_tokens:
        seed = SampleConfig.from_dict(p.samples).seed
        model.set_token_stats(*sample_token_stats(feature_cache, train_ids, p.stats_max_frames, seed))
    return model


def train_rla(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame, params: dict,
              device: str, tuned_shape: dict | None = None):
    """Train the RLA autoencoder on the train split -> trained model.

    ``tuned_shape``: the ``rla_tuned_shape`` dataset (None when no study ran); used only when
    ``rla.use_tuned_shape`` is true, and then its latent_tokens x latent_dim replace the configured ones.
    """
    from rla_pipeline.models.rla import rla_loss
    from rla_pipeline.training.trainer import TrainerConfig, train
    from rla_pipeline.tuning.study import apply_tuned_shape

    p = RLAParams.from_dict(params)
    model_params = apply_tuned_shape(p.model, tuned_shape, p.use_tuned_shape)
    train_ds, val_ds = build_rla_datasets(feature_cache, episode_splits, episode_index, params)
    model = build_rla_model(feature_cache, train_ds, episode_ids(episode_splits, "train"), params, model_params)
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
    seen = rla_reconstruction(rla_model, feature_cache, episode_ids(episode_splits, "val"), e.horizons, e.stride,
                              e.batch_size, split="val")
    unseen = rla_reconstruction(rla_model, feature_cache, episode_ids(episode_splits, "heldout_task"), e.horizons,
                                e.stride, e.batch_size, split="heldout_task")
    prog = temporal_progression(rla_model, feature_cache, episode_ids(episode_splits, "val"), e.progression_h, e.alphas,
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
