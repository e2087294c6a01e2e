"""Up-front checks: every training/evaluation stage asks here, before any work, whether its data can serve it.

Small real datasets (a handful of LeRobot episodes, a few phone videos) break assumptions the simulator never
does: a validation split without actions, episodes shorter than the asked horizons, no labelled episode at all.
Each check runs in seconds over the episode splits and the cached frame counts and raises :class:`DataCheckError`
naming what is missing and the parameter to change, instead of a library's internal error after minutes of
training (the issue-13 case: ``ValueError: Number of rows must be a positive integer, not 0`` from a plot when the
only validation episode had no actions). No Kedro here.
"""
from __future__ import annotations

import pandas as pd


class DataCheckError(ValueError):
    """A stage's data cannot serve it; the message names the missing thing and the parameter to change."""


def _frames(feature_cache, episode_ids: list[str]) -> dict[str, int]:
    """Cached frame count per episode, from the manifest (no token file is opened)."""
    manifest = feature_cache.manifest().set_index("episode_id")
    return {e: int(manifest.loc[e, "frames"]) for e in episode_ids if e in manifest.index}


def _with_actions(feature_cache, episode_ids: list[str], source: str = "action") -> list[str]:
    """The episodes that carry the conditioning signal ``source`` (features.samples.conditioning_signal)."""
    from rla_pipeline.features.samples import conditioning_signal

    return [e for e in episode_ids if conditioning_signal(feature_cache.steps(e), source) is not None]


def check_joint_positions(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame,
                          where: str = "world_model") -> None:
    """``world_model.conditioning: joint_positions`` reads the episodes' ``proprio`` (qpos for ManiSkill episodes):
    every action-labelled episode of the train/val splits must carry it, or it would silently drop out of the
    world models' data (a LeRobot dataset imported without its state, say)."""
    ids = [e for s in ("train", "val", "heldout_task") for e in _split_ids(episode_splits, s)]
    labelled = _with_actions(feature_cache, ids, "action")
    lacking = [e for e in labelled if "proprio" not in feature_cache.steps(e)]
    if not lacking and labelled:
        return
    if not labelled:
        return  # no labelled episode at all: check_world_model_data names that
    robots = _robots_of(episode_index, lacking)
    raise DataCheckError(
        f"{where}: {where}.conditioning is joint_positions, which reads the episodes' proprio (joint positions), "
        f"but {len(lacking)} of {len(labelled)} action-labelled episodes have none (e.g. {lacking[:3]}; robots "
        f"{robots.value_counts().to_dict()}). Set {where}.conditioning: actions, or import their joint states "
        f"(ingestion.lerobot_datasets[].use_state: true and state_key naming the joint positions)")


def _robots_of(episode_index: pd.DataFrame, ids: list[str]) -> pd.Series:
    """The robot of each of ``ids`` (episode metadata), for messages that count episodes per robot."""
    return robot_column(episode_index.set_index("episode_id").loc[ids].reset_index())


def _split_ids(splits: pd.DataFrame, split: str) -> list[str]:
    return sorted(splits.loc[splits["split"] == split, "episode_id"])


def robot_column(episode_index: pd.DataFrame) -> pd.Series:
    """Robot identity per episode (``EpisodeMeta.robot``); episodes without one count as robot ``"unknown"``."""
    robots = episode_index["robot"] if "robot" in episode_index else pd.Series(None, index=episode_index.index)
    return robots.where(robots.notna() & (robots.astype(str) != ""), "unknown").astype(str)


def _describe(feature_cache, splits: pd.DataFrame, split: str, source: str = "action") -> str:
    ids = _split_ids(splits, split)
    return f"{len(ids)} {split} episode(s), {len(_with_actions(feature_cache, ids, source))} with {_label(source)}"


def _label(source: str) -> str:
    return {"action": "actions", "proprio": "proprio"}.get(source, source)


def check_rla_data(feature_cache, episode_splits: pd.DataFrame, h_min: int, *, need_val: bool = False,
                   where: str = "rla") -> None:
    """The RLA (and tuning) need train episodes with more than ``h_min`` frames; evaluation needs val episodes."""
    train = _split_ids(episode_splits, "train")
    if not train:
        raise DataCheckError(
            f"{where}: the train split is empty ({len(episode_splits)} cached episodes). Import or simulate more "
            f"episodes (ingestion.*), or lower rla.split.val_fraction")
    frames = _frames(feature_cache, train)
    usable = [e for e, n in frames.items() if n > h_min]
    if not usable:
        longest = max(frames.values(), default=0)
        raise DataCheckError(
            f"{where}: no train episode has more than {h_min} frames (longest: {longest}), so there is no "
            f"(s_t, s_t+h) pair to learn from: lower {where}.samples.h_min or import longer episodes")
    if need_val and not _split_ids(episode_splits, "val"):
        raise DataCheckError(
            f"{where}: evaluation needs at least one validation episode; the split has {len(train)} train, 0 val. "
            f"Raise rla.split.val_fraction (a task needs >= 2 episodes to give one to validation) or import more "
            f"episodes")


def check_world_model_data(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame, p,
                           *, evaluation: bool = True) -> None:
    """The world models need train episodes with actions (long enough for a training pair) and, for their
    evaluation (run after training, so checked before it), validation episodes with actions longer than every
    asked horizon. ``p``: the stage's parsed ``params:world_model`` (``stages.world_model.WorldModelStageConfig``;
    the checks sit below the stages they serve, so they parse no stage's parameters)."""
    src = p.samples.action_source
    if p.conditioning == "joint_positions":
        check_joint_positions(feature_cache, episode_splits, episode_index)
    train = _with_actions(feature_cache, _split_ids(episode_splits, "train"), src)
    if not train:
        raise DataCheckError(
            f"world_model: no train episode has {_label(src)} ({_describe(feature_cache, episode_splits, 'train', src)}); "
            f"the world models are action-conditioned. Import labelled episodes (ingestion.lerobot_datasets with "
            f"use_actions: true, or ingestion.run_simulation: true)")
    frames = _frames(feature_cache, train)
    if not any(n > p.samples.h_min for n in frames.values()):
        raise DataCheckError(
            f"world_model: no train episode with {_label(src)} has more than world_model.samples.h_min="
            f"{p.samples.h_min} frames (longest: {max(frames.values(), default=0)}): lower world_model.samples.h_min")
    if not evaluation:
        return
    val = _with_actions(feature_cache, _split_ids(episode_splits, "val"), src)
    if not val:
        robots = _robots_of(episode_index, train)
        raise DataCheckError(
            f"world_model: evaluation needs at least one validation episode with {_label(src)} "
            f"({_describe(feature_cache, episode_splits, 'val', src)}; labelled train episodes per robot: "
            f"{robots.value_counts().to_dict()}). A robot with >= 2 labelled episodes gives one to validation: "
            f"import more labelled episodes or raise rla.split.val_fraction")
    longest = max(_frames(feature_cache, val).values())
    too_long = [h for h in p.eval.horizons if h >= longest]
    if too_long:
        raise DataCheckError(
            f"world_model: world_model.eval.horizons {too_long} need validation episodes with {_label(src)} longer than "
            f"the horizon; the longest has {longest} frames: lower world_model.eval.horizons (below {longest}) or "
            f"import longer episodes")
