"""The RLA autoencoder stage: episode split, the ONE builder of its data and model, training, evaluation.

``rla`` (Kedro) wires these functions; ``stages.tune`` trains every trial through :func:`build_rla_data` and
:func:`build_rla_model`; ``stages.world_model`` trains on the same split. No Kedro here.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rla_pipeline.features.samples import SampleConfig
from rla_pipeline.models.rla import RLAConfig
from rla_pipeline.stages.common import (
    check_trainer_block, checkpoint_dir, episode_ids, sample_token_stats, token_pair_datasets, trainer_config,
)
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
    """Evaluation: h buckets (frames), pair stride, and the temporal-progression check (claim 1.3,
    ``evaluation.metrics.temporal_progression``): its horizon (choose one where the decoder is clearly below copy:
    the table prints ``decoder_over_copy`` beside the verdict), grid of alphas (must include 1.0), pairs, control
    donors per pair and episode-bootstrap resamples."""

    horizons: list[int] = field(default_factory=lambda: [2, 5, 10, 15])
    stride: int = 4
    batch_size: int = 64
    progression_h: int = 15
    alphas: list[float] = field(default_factory=lambda: [i / 10 for i in range(11)])
    progression_max_pairs: int = 64
    progression_donors: int = 8
    progression_n_boot: int = 1000

    def __post_init__(self) -> None:
        if 1.0 not in [float(a) for a in self.alphas] or len(self.alphas) < 2:
            raise ValueError(f"rla.eval.alphas must hold >= 2 values including 1.0, got {self.alphas}")
        if self.progression_donors < 1 or self.progression_n_boot < 1:
            raise ValueError("rla.eval.progression_donors and progression_n_boot must be >= 1")


@dataclass
class RLAStageConfig:
    """``params:rla``. split; samples (token pairs); model (the autoencoder; num_tokens/token_dim come from the
    cache); trainer (TrainerConfig fields but run_name/checkpoint_dir); normalise_tokens (per-dim mean/std of
    training tokens stored in the model); stats_max_frames (frames sampled for them); use_tuned_shape (true: the
    latent K x d of the tune pipeline's ``rla_tuned_shape``); eval."""

    split: SplitConfig = field(default_factory=SplitConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    model: RLAConfig = field(default_factory=RLAConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    normalise_tokens: bool = True
    stats_max_frames: int = 2000
    use_tuned_shape: bool = False
    eval: RLAEvalConfig = field(default_factory=RLAEvalConfig)

    def __post_init__(self) -> None:
        self.trainer = check_trainer_block(self.trainer, "rla.trainer")

    @classmethod
    def from_dict(cls, d: "dict | RLAStageConfig | None") -> "RLAStageConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="rla")


@dataclass
class RLAData:
    """What an RLA trains on: token pairs of the train/val splits and the train tokens' per-dim stats.

    train/val: map-style datasets of {"s_t", "s_th"} (N, D) items with ``num_tokens``/``token_dim``
    (``TokenPairDataset``); token_stats: (mean, std) each (D,), or None (no normalisation).
    """

    train: Any
    val: Any
    token_stats: tuple | None = None


def split_episodes(episode_index: pd.DataFrame, feature_manifest: pd.DataFrame, params: dict, seed: int
                   ) -> pd.DataFrame:
    """Deterministic split (by ``seed``) of the cached episodes: train/val per seen task, heldout_task for the rest.

    Then per robot (``EpisodeMeta.robot``): a robot with >= 2 action-labelled episodes outside the held-out task
    keeps at least one of them in validation (the world models are evaluated on labelled val episodes only), one
    with fewer is named in a warning. The held-out task is optional: imported data normally has no episode of it
    (it is a simulator task) and then nothing is held out. -> DataFrame(episode_id, task, kind, split).
    """
    from rla_pipeline.stages.checks import robot_column

    cfg = RLAStageConfig.from_dict(params).split
    df = episode_index[episode_index["episode_id"].isin(feature_manifest["episode_id"])]
    labelled = df["action_dim"].notna() if "action_dim" in df else pd.Series(False, index=df.index)
    robots = robot_column(df)
    df = df[["episode_id", "task", "kind"]].assign(_robot=robots, _labelled=labelled.astype(bool))
    df = df.sort_values("episode_id").reset_index(drop=True)
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
    if cfg.val_fraction > 0:
        _keep_labelled_val_per_robot(df, rng)
    if cfg.heldout_task is not None and not (df["split"] == "heldout_task").any():
        logger.info("held-out task %r has no cached episodes (imported data): nothing held out, "
                    "rla_generalisation is empty (rla.split.heldout_task: null silences this)", cfg.heldout_task)
    logger.info("episode splits: %s", df.groupby("split").size().to_dict())
    return df.drop(columns=["_robot", "_labelled"])


def _keep_labelled_val_per_robot(df: pd.DataFrame, rng: np.random.Generator) -> None:
    """In place: move one labelled train episode to val for each robot with >= 2 labelled (non-held-out) episodes
    and none in val; warn, naming them, about robots whose labelled episodes cannot give one to validation."""
    seen = df[df["split"] != "heldout_task"]
    short = []
    for robot, g in seen[seen["_labelled"]].groupby("_robot", sort=True):
        if (g["split"] == "val").any():
            continue
        if len(g) < 2:
            short.append(f"{robot} ({len(g)} labelled episode)")
            continue
        train = g.index[g["split"] == "train"].to_numpy()
        df.loc[rng.permutation(train)[:1], "split"] = "val"
    if short:
        logger.warning("no labelled validation episode for robot(s) %s: the world models are evaluated without "
                       "them (a robot needs >= 2 action-labelled episodes)", ", ".join(short))


def training_episode_ids(splits: pd.DataFrame, include_heldout_task: bool) -> list[str]:
    """Episodes the models train on: the train split, plus every episode of the held-out task when
    ``include_heldout_task`` (the models BC+RLA and WMRL use must have seen every task the tables report; only the
    separate ``rla_heldout_model`` of claim 1.2 keeps the task out)."""
    ids = episode_ids(splits, "train")
    return sorted(ids + episode_ids(splits, "heldout_task")) if include_heldout_task else ids


def build_rla_data(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame,
                   cfg: RLAStageConfig, require_val: bool = False, seed: int = 0,
                   include_heldout_task: bool = False) -> RLAData:
    """The RLA's datasets (train/val splits, all kinds: no actions needed) and token statistics, built once.
    ``seed`` (the global one) offsets the configured sample seed (horizon draws, statistics frames);
    ``include_heldout_task``: see :func:`training_episode_ids`."""
    cfg = dataclasses.replace(cfg, samples=dataclasses.replace(cfg.samples, seed=cfg.samples.seed + seed))
    train_ids = training_episode_ids(episode_splits, include_heldout_task)
    val_ids = episode_ids(episode_splits, "val")
    if not train_ids:
        raise ValueError("episode_splits has no train episodes: ingest more episodes or lower rla.split.val_fraction")
    if require_val and not val_ids:
        raise ValueError(f"need validation episodes; episode_splits has {len(train_ids)} train, 0 val")
    train_ds, val_ds = token_pair_datasets(feature_cache, episode_index, train_ids, val_ids, cfg.samples)
    stats = None
    if cfg.normalise_tokens:
        stats = sample_token_stats(feature_cache, train_ids, cfg.stats_max_frames, cfg.samples.seed)
    return RLAData(train_ds, val_ds, stats)


def build_rla_model(data: RLAData, model: RLAConfig, latent_shape: tuple[int, int] | None = None):
    """A fresh RLA autoencoder: ``model`` sized to the data (N, D), latent K x d = ``latent_shape`` when given,
    with the data's token statistics set."""
    from rla_pipeline.models.rla import ResidualLatentActionAutoencoder

    cfg = dataclasses.replace(model, num_tokens=data.train.num_tokens, token_dim=data.train.token_dim)
    if latent_shape is not None:
        cfg = dataclasses.replace(cfg, latent_tokens=int(latent_shape[0]), latent_dim=int(latent_shape[1]))
    net = ResidualLatentActionAutoencoder(cfg)
    if data.token_stats is not None:
        net.set_token_stats(*data.token_stats)
    return net


def tuned_latent_shape(tuned: dict | None, use_tuned_shape: bool) -> tuple[int, int] | None:
    """The latent (K, d) the rla stage trains: None (the configured one) unless ``use_tuned_shape``, then the
    ``rla_tuned_shape`` dataset's; raises when the study never ran rather than silently training the configured
    shape."""
    if not use_tuned_shape:
        return None
    if not tuned:
        raise ValueError("rla.use_tuned_shape is true but rla_tuned_shape is missing: run `kedro run --pipelines=tune`"
                         " first (or set rla.use_tuned_shape: false)")
    return int(tuned["latent_tokens"]), int(tuned["latent_dim"])


def train_rla(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame, params: dict,
              device: str, rla_tuned_shape: dict | None = None, checkpoint_root: str | None = None, seed: int = 0,
              include_heldout_task: bool = True):
    """Train the RLA autoencoder -> trained model (checkpoints in ``<checkpoint_root>/rla``).

    ``include_heldout_task`` (default): on the train split AND the held-out task's episodes -- this ``rla_model``
    feeds BC+RLA and the world model, whose tables report that task too. :func:`train_rla_heldout` is claim 1.2's
    run without it.

    ``rla_tuned_shape``: the tune pipeline's result (None when no study ran); used only when
    ``rla.use_tuned_shape`` is true, and then its latent_tokens x latent_dim replace the configured ones.
    ``seed``: the global seed; the trainer's (init, data order) and the sample seed derive from it.
    """
    from rla_pipeline.models.rla import rla_loss
    from rla_pipeline.training.trainer import train

    from rla_pipeline.stages.checks import check_rla_data

    cfg = RLAStageConfig.from_dict(params)
    check_rla_data(feature_cache, episode_splits, cfg.samples.h_min)  # seconds, before any training
    shape = tuned_latent_shape(rla_tuned_shape, cfg.use_tuned_shape)
    from rla_pipeline.utils.seeding import seed_everything

    data = build_rla_data(feature_cache, episode_splits, episode_index, cfg, seed=seed,
                          include_heldout_task=include_heldout_task)
    seed_everything(seed)  # the initial weights are drawn here, before the trainer seeds its own RNGs
    model = build_rla_model(data, cfg.model, shape)
    name = "rla" if include_heldout_task else "rla_heldout"
    tcfg = trainer_config(cfg.trainer, run_name=name, device=device, seed=seed + int(cfg.trainer.get("seed", 0)),
                          checkpoint_dir=checkpoint_dir(checkpoint_root, name))
    result = train(model, rla_loss, data.train, data.val, tcfg)
    logger.info("RLA final validation: %s", result.final_val)
    return result.model


def train_rla_heldout(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame, params: dict,
                      device: str, rla_tuned_shape: dict | None = None, checkpoint_root: str | None = None,
                      seed: int = 0):
    """Claim 1.2's RLA: the same recipe on the train split only (the held-out task never seen) -> rla_heldout_model,
    scored on the held-out task by :func:`evaluate_rla` (checkpoints in ``<checkpoint_root>/rla_heldout``)."""
    return train_rla(feature_cache, episode_splits, episode_index, params, device, rla_tuned_shape, checkpoint_root,
                     seed, include_heldout_task=False)


def evaluate_rla(rla_model, feature_cache, episode_splits: pd.DataFrame, params: dict, rla_heldout_model=None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """-> (rla_metrics on val episodes of seen tasks, rla_generalisation on the held-out task,
    rla_temporal_progression on val episodes: one row per h, true z vs shuffled z with episode-bootstrap intervals
    and a verdict). The generalisation table scores ``rla_heldout_model`` (trained without the task); ``rla_model``
    has seen it, so it is used there only when no held-out run is given."""
    from rla_pipeline import tracking
    from rla_pipeline.evaluation.metrics import rla_reconstruction, temporal_progression

    e = RLAStageConfig.from_dict(params).eval
    seen = rla_reconstruction(rla_model, feature_cache, episode_ids(episode_splits, "val"), e.horizons, e.stride,
                              e.batch_size, split="val")
    unseen = rla_reconstruction(rla_heldout_model if rla_heldout_model is not None else rla_model, feature_cache,
                                episode_ids(episode_splits, "heldout_task"), e.horizons, e.stride, e.batch_size,
                                split="heldout_task")
    prog = temporal_progression(rla_model, feature_cache, episode_ids(episode_splits, "val"), e.progression_h, e.alphas,
                                e.stride, e.progression_max_pairs, donors=e.progression_donors,
                                n_boot=e.progression_n_boot, batch_size=e.batch_size)
    metrics = {}
    for name, table in (("rla_val", seen), ("rla_heldout_task", unseen)):
        for row in table.itertuples():
            metrics[f"{name}.h{row.h}.l1"] = row.rla_l1
            metrics[f"{name}.h{row.h}.copy_l1"] = row.copy_l1
    verdict = "no pairs"
    for row in prog.itertuples():
        for col in ("decoder_over_copy", "progress_at_1", "progress_at_1_diff", "progress_at_1_diff_ci_low",
                    "progress_at_1_diff_ci_high", "spearman_diff", "spearman_diff_ci_low", "spearman_diff_ci_high"):
            metrics[f"rla_temporal_progression.h{row.h}.{col}"] = float(getattr(row, col))
        verdict = f"h={row.h}, decoder/copy {row.decoder_over_copy:.3f}: {row.verdict}"
        if row.decoder_over_copy > 0.9:
            logger.warning("temporal progression at h=%s: the decoder is at %.2f of copy there, so the check has "
                           "little power; choose rla.eval.progression_h where it is clearly below copy",
                           row.h, row.decoder_over_copy)
    tracking.log_metrics(metrics)
    logger.info("RLA val:\n%s\nheld-out task:\n%s\ntemporal progression: %s", seen, unseen, verdict)
    return seen, unseen, prog
