"""The world-model stage: RLA-WM (flow on the frozen RLA's latent) and three baselines, trained alike and compared.

All share the action-labelled token-pair samples and the trainer settings (``trainer``); each gets its own checkpoint
folder ``<checkpoint_root>/world_model/<name>``. Budget (``budget``): RLA-WM is two trainings, the RLA autoencoder
and the flow on its latent, so under ``total`` (default) each baseline trains on as many samples as both together
(world-model steps + the RLA's steps x its batch / this batch); ``same_steps`` gives every model only the world-model
steps (the first results' setting, which favours RLA-WM). Baselines: a deterministic predictor of s_{t+h} (direct)
and of s_t + delta (residual, the parametrisation RLA's decoder uses) -- neither is DINO-WM's recipe (no frame
history, no per-frame action embedding concatenated to patches), so neither is named after it -- and flow matching
on the absolute next-state tokens. Trainer and sample seeds derive from the global ``seed``. No Kedro here.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rla_pipeline.features.samples import CONDITIONING, SampleConfig
from rla_pipeline.models.world_model import WorldModelConfig
from rla_pipeline.stages.checks import check_world_model_data
from rla_pipeline.stages.common import (
    action_episode_ids, check_trainer_block, checkpoint_dir, episode_ids, sample_token_stats, token_pair_datasets,
    trainer_config,
)
from rla_pipeline.stages.robots import per_robot_table, pictures_robot, robot_action_stats, tag_robots
from rla_pipeline.utils.config import check_keys, from_dict

logger = logging.getLogger(__name__)

NAMES = {"rla_wm": "RLA-WM", "deterministic": "deterministic (direct s_t+h)",
         "deterministic_residual": "deterministic (residual s_t + delta)", "absolute_flow": "absolute flow"}
# model class of each kind (models.world_model.WORLD_MODELS); the residual baseline is the deterministic model with
# predict_residual forced on
MODEL_OF = {"rla_wm": "rla_wm", "deterministic": "deterministic", "deterministic_residual": "deterministic",
            "absolute_flow": "absolute_flow"}
FORCED = {"deterministic": {"predict_residual": False}, "deterministic_residual": {"predict_residual": True}}
BUDGETS = ("total", "same_steps")


@dataclass
class WMEvalConfig:
    """horizons: frames ahead (paper 5 / 15 / 30); chunk: frames per autoregressive step (paper 10);
    stride: between evaluation starts; max_pairs: per horizon (taken round-robin over episodes interleaved by task,
    so no task or episode dominates); pictures: episodes shown as PCA images; pca_max_frames: training frames the
    PCA of the pictures is fitted on; n_boot: episode-level bootstrap resamples of the intervals."""

    horizons: list[int] = field(default_factory=lambda: [5, 15, 30])
    chunk: int = 10
    stride: int = 4
    max_pairs: int = 64
    pictures: int = 3
    pca_max_frames: int = 500
    n_boot: int = 1000


@dataclass
class WMBaselinesConfig:
    """Per-baseline overrides of the shared ``model`` block (WorldModelConfig fields)."""

    deterministic: dict[str, Any] = field(default_factory=dict)
    deterministic_residual: dict[str, Any] = field(default_factory=dict)
    absolute_flow: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("deterministic", "deterministic_residual", "absolute_flow"):
            setattr(self, name, check_keys(WorldModelConfig, getattr(self, name),
                                           where=f"world_model.baselines.{name}"))


@dataclass
class WorldModelStageConfig:
    """``params:world_model``: conditioning; samples; model (WorldModelConfig shared by the three;
    tokens/actions/max_actions come from the data, RLA-WM's ``rla`` from the frozen autoencoder); baselines; trainer
    (TrainerConfig fields but run_name/checkpoint_dir); budget ("total" | "same_steps", see the module docstring);
    stats_max_frames; eval.

    conditioning: what every world model's action chunk holds: "actions" (the commanded actions) or
    "joint_positions" (the robot's joint positions over the chunk, from the episodes' ``proprio``: the paper's
    action space; see features.samples.conditioning_signal). It sets ``samples.action_source`` (leave that unset).
    """

    conditioning: str = "actions"
    samples: SampleConfig = field(default_factory=SampleConfig)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    baselines: WMBaselinesConfig = field(default_factory=WMBaselinesConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    budget: str = "total"
    stats_max_frames: int = 2000
    eval: WMEvalConfig = field(default_factory=WMEvalConfig)

    def __post_init__(self) -> None:
        self.trainer = check_trainer_block(self.trainer, "world_model.trainer")
        if self.conditioning not in CONDITIONING:
            raise ValueError(f"world_model.conditioning must be one of {sorted(CONDITIONING)}, "
                             f"got {self.conditioning!r}")
        source = CONDITIONING[self.conditioning]
        if self.samples.action_source not in ("action", source):  # one key decides: no silent disagreement
            raise ValueError(f"world_model.samples.action_source {self.samples.action_source!r} disagrees with "
                             f"world_model.conditioning {self.conditioning!r}: set only world_model.conditioning")
        self.samples = dataclasses.replace(self.samples, action_source=source)
        if self.budget not in BUDGETS:
            raise ValueError(f"world_model.budget must be one of {BUDGETS}, got {self.budget!r}")

    @classmethod
    def from_dict(cls, d: "dict | WorldModelStageConfig | None") -> "WorldModelStageConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="world_model")


def baseline_steps(params, rla_params) -> int:
    """Trainer steps of a baseline: the world-model steps, plus (budget "total") as many samples as the RLA
    autoencoder of RLA-WM was trained on, at the world-model batch size."""
    from rla_pipeline.training.trainer import TrainerConfig

    p = WorldModelStageConfig.from_dict(params)
    wm = TrainerConfig.from_dict({**p.trainer, "run_name": "x"})
    if p.budget == "same_steps":
        return wm.max_steps
    rla_trainer = dict((rla_params or {}).get("trainer") or {})
    if not rla_trainer:
        raise ValueError("world_model.budget: total counts the RLA autoencoder's steps: pass the `rla` parameters "
                         "(params:rla) to the baseline, or set world_model.budget: same_steps")
    rla = TrainerConfig.from_dict({**{k: v for k, v in rla_trainer.items() if k != "checkpoint_dir"}, "run_name": "x"})
    return wm.max_steps + math.ceil(rla.max_steps * rla.batch_size / wm.batch_size)


def build_world_model(kind: str, p: WorldModelStageConfig, train_ds, train_ids: list[str], robots: dict,
                      feature_cache, episode_index, rla_model=None, seed: int = 0):
    """A fresh world model of ``kind`` (a key of NAMES) sized to ``train_ds`` (robot-tagged token pairs of the
    action-labelled training episodes ``train_ids``; ``robots`` from :func:`tag_robots`), with its token and action
    statistics set from those episodes. ``rla_model``: the frozen RLA (``rla_wm`` only). Seeds the global RNGs with
    ``seed`` before drawing the initial weights."""
    from rla_pipeline.features.samples import action_stats
    from rla_pipeline.models.world_model import WORLD_MODELS
    from rla_pipeline.utils.seeding import seed_everything

    cfg = dataclasses.replace(p.model, num_tokens=train_ds.num_tokens, token_dim=train_ds.token_dim, robots=robots,
                              action_dim=train_ds.action_dim, max_actions=p.samples.h_max,
                              conditioning=p.conditioning,
                              **{**getattr(p.baselines, kind, {}), **FORCED.get(kind, {})},
                              **({"rla": rla_model.config} if kind == "rla_wm" else {}))
    seed_everything(seed)  # the initial weights are drawn here, before the trainer seeds its own RNGs
    model = WORLD_MODELS["rla_wm"](cfg, rla=rla_model) if kind == "rla_wm" else WORLD_MODELS[MODEL_OF[kind]](cfg)
    if kind != "rla_wm":  # RLA-WM uses the frozen RLA's token statistics
        model.set_stats(*sample_token_stats(feature_cache, train_ids, p.stats_max_frames, p.samples.seed))
    a = action_stats(feature_cache, train_ids, p.samples.action_source, train_ds.action_dim)
    model.set_stats(action_mean=a["mean"], action_std=a["std"])
    if robots:  # each robot normalised by its own statistics (its columns are its own joints / action axes)
        model.set_robot_action_stats(robot_action_stats(feature_cache, episode_index, train_ids,
                                                        p.samples.action_source))
    return model


def _fit(kind: str, rla_model, feature_cache, episode_splits, episode_index, params, device: str,
         checkpoint_root: str | None, seed: int = 0, rla_params: dict | None = None, checkpoint_name: str | None = None):
    from rla_pipeline.models.world_model import world_model_loss
    from rla_pipeline.training.trainer import train

    p = WorldModelStageConfig.from_dict(params)
    # up front, evaluation included: a split the evaluation cannot use must stop before minutes of training
    check_world_model_data(feature_cache, episode_splits, episode_index, p)
    # every seed derives from the global one: the horizon draws (offset by the configured sample seed) and the
    # trainer (init, data order)
    p.samples = dataclasses.replace(p.samples, seed=p.samples.seed + seed)
    # every task the tables report, the held-out one included, as the RLA (rla_model) was trained
    train_ids = sorted(action_episode_ids(feature_cache, episode_splits, "train")
                       + action_episode_ids(feature_cache, episode_splits, "heldout_task"))
    val_ids = action_episode_ids(feature_cache, episode_splits, "val")
    if not train_ids:
        raise ValueError("world_model: no training episodes with actions in the train split")
    train_ds, val_ds = token_pair_datasets(feature_cache, episode_index, train_ids, val_ids, p.samples)
    # robot identity from the episode metadata: one action MLP per robot before the shared GRU
    train_ds, val_ds, robots = tag_robots(feature_cache, episode_index, train_ds, val_ds, p.samples.action_source)
    model = build_world_model(kind, p, train_ds, train_ids, robots, feature_cache, episode_index, rla_model, seed)
    # baselines: the same total budget as RLA-WM + its autoencoder (after the data checks: they stop in seconds)
    steps = {} if kind == "rla_wm" else {"max_steps": baseline_steps(params, rla_params)}
    tcfg = trainer_config(p.trainer, run_name=f"world_model.{checkpoint_name or kind}", device=device,
                          seed=seed + int(p.trainer.get("seed", 0)), **steps,
                          checkpoint_dir=checkpoint_dir(checkpoint_root, "world_model", checkpoint_name or kind))
    logger.info("%s: %d trainer steps (budget %s)", NAMES[kind], tcfg.max_steps, p.budget)
    result = train(model, world_model_loss, train_ds, val_ds, tcfg)
    logger.info("%s final validation: %s", NAMES[kind], result.final_val)
    return result.model


def train_rla_world_model(rla_model, feature_cache, episode_splits, episode_index, params: dict, device: str,
                          checkpoint_root: str | None = None, seed: int = 0):
    """RLA-WM: flow on z with the frozen ``rla_model`` decoder."""
    return _fit("rla_wm", rla_model, feature_cache, episode_splits, episode_index, params, device, checkpoint_root,
                seed)


def world_model_for_rl(world_model, rla_model, feature_cache, episode_splits, episode_index, params: dict,
                       device: str, checkpoint_root: str | None = None, seed: int = 0):
    """The RLA-WM that WMRL's imagined env steps with the policy's COMMANDED actions.

    With ``world_model.conditioning: actions`` that is ``world_model`` itself (returned as is, no training). With
    ``joint_positions`` (conf/paper) a policy's commanded actions are not what that model was conditioned on, so an
    RLA-WM of the same settings conditioned on actions is trained here (checkpoints in
    ``<checkpoint_root>/world_model/rla_wm_actions``)."""
    if getattr(world_model.config, "conditioning", "actions") == "actions":
        return world_model
    p = WorldModelStageConfig.from_dict(params)
    logger.info("world_model.conditioning is %s: training an RLA-WM conditioned on commanded actions for WMRL",
                p.conditioning)
    p = dataclasses.replace(p, conditioning="actions", samples=dataclasses.replace(p.samples, action_source="action"))
    return _fit("rla_wm", rla_model, feature_cache, episode_splits, episode_index, p, device, checkpoint_root, seed,
                checkpoint_name="rla_wm_actions")


def _baseline(kind, feature_cache, episode_splits, episode_index, params, device, checkpoint_root, seed, rla_params):
    return _fit(kind, None, feature_cache, episode_splits, episode_index, params, device, checkpoint_root, seed,
                rla_params)


def train_deterministic_baseline(feature_cache, episode_splits, episode_index, params: dict, device: str,
                                 checkpoint_root: str | None = None, seed: int = 0, rla_params: dict | None = None):
    """Baseline (a): deterministic predictor of s_{t+h} directly (``rla_params``: for the "total" budget)."""
    return _baseline("deterministic", feature_cache, episode_splits, episode_index, params, device, checkpoint_root,
                     seed, rla_params)


def train_deterministic_residual_baseline(feature_cache, episode_splits, episode_index, params: dict, device: str,
                                          checkpoint_root: str | None = None, seed: int = 0,
                                          rla_params: dict | None = None):
    """Baseline (a'): the same deterministic predictor with the residual parametrisation s_t + delta."""
    return _baseline("deterministic_residual", feature_cache, episode_splits, episode_index, params, device,
                     checkpoint_root, seed, rla_params)


def train_absolute_flow_baseline(feature_cache, episode_splits, episode_index, params: dict, device: str,
                                 checkpoint_root: str | None = None, seed: int = 0, rla_params: dict | None = None):
    """Baseline (b): flow matching on the absolute next-state tokens."""
    return _baseline("absolute_flow", feature_cache, episode_splits, episode_index, params, device, checkpoint_root,
                     seed, rla_params)


def interleave_by_task(episode_ids: list[str], episode_index: pd.DataFrame) -> list[str]:
    """Episode ids reordered round-robin over tasks (task A ep 1, task B ep 1, ..., task A ep 2, ...)."""
    task_of = episode_index.set_index("episode_id")["task"].to_dict()
    groups: dict[str, list[str]] = {}
    for e in sorted(episode_ids):
        groups.setdefault(str(task_of.get(e, "")), []).append(e)
    lists = list(groups.values())
    return [lst[i] for i in range(max(map(len, lists), default=0)) for lst in lists if i < len(lst)]


def conditioned_cache(models: dict, feature_cache):
    """The cache as the world models see it: each model says what its chunks hold (commanded actions or joint
    positions), and every evaluation (token table, decoded table, pictures) feeds exactly that, so the tables
    compare like with like."""
    from rla_pipeline.features.samples import ConditionedCache

    conds = {k: getattr(m.config, "conditioning", "actions") for k, m in models.items()}
    if len(set(conds.values())) > 1:
        raise ValueError(f"world models conditioned differently {conds}: retrain them with one "
                         f"world_model.conditioning")
    return ConditionedCache(feature_cache, CONDITIONING[next(iter(conds.values()))])


def _kinds(splits: pd.DataFrame, ids: list[str]) -> str:
    kinds = splits.set_index("episode_id").loc[ids, "kind"].value_counts() if ids else pd.Series(dtype=int)
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))


def model_size_and_data(models: dict, feature_cache, episode_splits: pd.DataFrame) -> tuple[dict, dict]:
    """-> ({model: parameter count}, {model: the episodes it trained on, in words}) for the prediction table.

    Every world model's dynamics trains on the episodes with actions of the train split and the held-out task (see
    :func:`_fit`); RLA-WM's count includes its frozen RLA autoencoder, which also trained on the episodes of those
    splits without actions (the actionless videos), data the baselines never see."""
    with_actions = sorted(action_episode_ids(feature_cache, episode_splits, "train")
                          + action_episode_ids(feature_cache, episode_splits, "heldout_task"))
    every = sorted(episode_ids(episode_splits, "train") + episode_ids(episode_splits, "heldout_task"))
    dyn = f"dynamics: {len(with_actions)} episodes with actions ({_kinds(episode_splits, with_actions)})"
    size = {k: int(sum(p.numel() for p in m.parameters())) for k, m in models.items()}
    data = {k: dyn for k in models}
    if "rla_wm" in models:
        data["rla_wm"] = (f"{dyn}; RLA autoencoder: {len(every)} episodes ({_kinds(episode_splits, every)}), "
                          "actions unused")
    return size, data


def evaluate_world_models(world_model, wm_baseline_deterministic, wm_baseline_absolute_flow, feature_cache,
                          episode_splits: pd.DataFrame, episode_index: pd.DataFrame, params: dict, seed: int,
                          wm_baseline_deterministic_residual=None):
    """-> (wm_prediction_table, wm_prediction_plot (Figure), wm_feature_pictures (Figure)) on val episodes.

    The table carries episode-level bootstrap 95% intervals on each model's ratio to copy and on RLA-WM minus each
    baseline (see :func:`rla_pipeline.evaluation.metrics.world_model_table`)."""
    import torch

    from rla_pipeline import tracking
    from rla_pipeline.evaluation.metrics import rollout_batch, world_model_table
    from rla_pipeline.evaluation.plots import TokenPCA, error_vs_horizon, feature_pictures

    p = WorldModelStageConfig.from_dict(params)
    check_world_model_data(feature_cache, episode_splits, episode_index, p)
    e = p.eval
    models = {"rla_wm": world_model, "deterministic": wm_baseline_deterministic,
              "deterministic_residual": wm_baseline_deterministic_residual,
              "absolute_flow": wm_baseline_absolute_flow}
    models = {k: v for k, v in models.items() if v is not None}
    size, data = model_size_and_data(models, feature_cache, episode_splits)
    feature_cache = conditioned_cache(models, feature_cache)
    val_ids = interleave_by_task(action_episode_ids(feature_cache, episode_splits, "val"), episode_index)
    fps = episode_index.loc[episode_index["episode_id"].isin(val_ids), "fps"]
    max_actions = world_model.config.max_actions
    # per robot (its episodes' actions share one width); `overall`: pair-weighted means over the robots
    table, overall = per_robot_table(models, episode_index, val_ids, lambda ids: world_model_table(
        models, feature_cache, ids, e.horizons, e.chunk, max_actions, e.stride, e.max_pairs, seed,
        float(fps.median()) if len(fps) else None, n_boot=e.n_boot, reference="rla_wm"))
    table = table.assign(params=table["model"].map(size).fillna(0).astype("int64"),
                         trained_on=table["model"].map(data).fillna("nothing (the start state)"))
    tracking.log_metrics({f"wm.{r.model}.h{r.horizon}.l1": r.token_l1 for r in overall.itertuples()})
    logger.info("world-model prediction table:\n%s", table.to_string())
    plot = error_vs_horizon(overall)

    # pictures: PCA fitted on training tokens; first frame of a few val episodes, rollouts at each horizon
    train_ids = episode_ids(episode_splits, "train")
    frames = [np.asarray(feature_cache.tokens(i), dtype=np.float32) for i in train_ids]
    sample = np.concatenate(frames)[:: max(1, sum(len(f) for f in frames) // e.pca_max_frames)]
    pca = TokenPCA(sample, seed=seed)
    robot, pic_ids = pictures_robot(models, episode_index, val_ids)  # one robot: its action chunks stack
    horizons = [h for h in e.horizons if rollout_batch(feature_cache, pic_ids, h, e.chunk, max_actions,
                                                       10**9, None) is not None]
    if not horizons:
        return table, plot, feature_pictures(pca, np.zeros((0, 1, 1)), {}, {}, title="no episode long enough")
    pic_ids = [i for i in pic_ids if feature_cache.tokens(i).shape[0] > max(horizons)][: e.pictures]
    truth, preds, start = {}, {name: {} for name in models}, None
    for h in horizons:
        b = rollout_batch(feature_cache, pic_ids, h, e.chunk, max_actions, stride=10**9)  # t = 0 only
        start, truth[h] = b.s_0.numpy(), b.target.numpy()
        for name, m in models.items():
            preds[name][h] = m.rollout(b.s_0, b.chunks, b.masks, generator=torch.Generator().manual_seed(seed),
                                       robot=robot)[-1].numpy()
    pictures = feature_pictures(pca, start, truth, {NAMES[k]: v for k, v in preds.items()},
                                title="DINO tokens as PCA colours: truth vs predictions (val episodes)")
    return table, plot, pictures
