"""Several robots in one world model: robot identity from the episode metadata, per-robot evaluation.

The world models have one action MLP per robot (``WorldModelConfig.robots``: name -> action width) before the
shared GRU; training items carry the robot's index, evaluation runs per robot (one robot's episodes share one
action width, so their chunks stack). No Kedro here.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from rla_pipeline.features.samples import action_stats, conditioning_signal
from rla_pipeline.stages.checks import robot_column


def robot_of(episode_index: pd.DataFrame) -> dict[str, str]:
    """episode id -> robot name (``"unknown"`` when the metadata has none)."""
    return dict(zip(episode_index["episode_id"], robot_column(episode_index)))


def robot_widths(feature_cache, episode_index: pd.DataFrame, episode_ids: list[str], source: str = "action"
                 ) -> dict[str, int]:
    """robot -> its action width over ``episode_ids`` (a robot whose episodes disagree raises ValueError).
    ``source``: the conditioning signal (features.samples.conditioning_signal)."""
    robots = robot_of(episode_index)
    widths: dict[str, set[int]] = {}
    for e in episode_ids:
        a = conditioning_signal(feature_cache.steps(e), source)
        if a is not None:
            widths.setdefault(robots[e], set()).add(int(np.asarray(a).shape[1]))
    mixed = {r: sorted(w) for r, w in widths.items() if len(w) > 1}
    if mixed:
        raise ValueError(f"world_model: episodes of one robot have different action widths {mixed}; give each "
                         f"action space its own robot name (ingestion.lerobot_datasets[].robot)")
    return {r: w.pop() for r, w in sorted(widths.items())}


def robot_action_stats(feature_cache, episode_index: pd.DataFrame, episode_ids: list[str], source: str = "action"
                       ) -> dict[str, dict[str, np.ndarray]]:
    """robot -> {"mean", "std"} (its own width) of the ``source`` signal over its episodes among ``episode_ids``:
    each robot normalised by its own statistics, so a 9-d Panda qpos and a 6-d arm's joints do not share one
    mean/std per column (their columns mean different joints)."""
    of = robot_of(episode_index)
    by_robot: dict[str, list[str]] = {}
    for e in episode_ids:
        by_robot.setdefault(of[e], []).append(e)
    return {r: action_stats(feature_cache, ids, source) for r, ids in sorted(by_robot.items())
            if any(conditioning_signal(feature_cache.steps(e), source) is not None for e in ids)}


class RobotTagged(Dataset):
    """A TokenPairDataset whose items also carry ``robot``: the index of the item's robot in ``sorted(robots)``."""

    def __init__(self, ds, episode_index: pd.DataFrame, robots: list[str]):
        self.ds = ds
        of = robot_of(episode_index)
        order = sorted(robots)
        self._robot = np.array([order.index(of[e]) for e in ds.episode_ids], dtype=np.int64)

    def __getattr__(self, name):  # num_tokens, token_dim, action_dim, fingerprint, set_epoch, ... of the data
        if name == "ds":
            raise AttributeError(name)
        return getattr(self.ds, name)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        item = self.ds[index]
        item["robot"] = self._robot[self.ds.locate(index)[0]]
        return item


def tag_robots(feature_cache, episode_index: pd.DataFrame, train_ds, val_ds, source: str = "action"):
    """-> (train, val, robots): the datasets with robot indices and robot -> action width of the train data."""
    robots = robot_widths(feature_cache, episode_index, train_ds.episode_ids, source)
    val_robots = set(robot_of(episode_index)[e] for e in (val_ds.episode_ids if val_ds is not None else []))
    unseen = sorted(val_robots - set(robots))
    if unseen:
        raise ValueError(f"world_model: validation episodes of robot(s) {unseen} that no train episode has: the "
                         f"model would have no action encoder for them (import more of their episodes)")
    tag = (lambda ds: RobotTagged(ds, episode_index, list(robots)) if ds is not None else None)
    return tag(train_ds), tag(val_ds), robots


def per_robot_table(models: dict, episode_index: pd.DataFrame, val_ids: list[str],
                    table: Callable[[list[str]], pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``table(ids)`` (the prediction table) once per robot of the world models, each inside ``for_robot``.

    -> (rows per robot with a ``robot`` column, one row per model and horizon: pair-weighted means for the plot).
    A one-robot model: the plain table twice (robot column = its robot or "all").
    """
    first = next(iter(models.values()))
    robots = list(getattr(first, "robots", []))
    if len(robots) <= 1:
        t = table(val_ids)
        return t.assign(robot=robots[0] if robots else "all"), t
    of = robot_of(episode_index)
    parts = []
    for r in robots:
        ids = [e for e in val_ids if of[e] == r]
        if not ids:
            continue
        with ExitStack() as stack:
            for m in models.values():
                stack.enter_context(m.for_robot(r))
            parts.append(table(ids).assign(robot=r))
    rows = pd.concat(parts, ignore_index=True)
    num = ["token_l1", "vs_copy", "seconds_per_step", "gflops_per_step"]
    w = rows[num].mul(rows["pairs"], axis=0).assign(pairs=rows["pairs"], model=rows["model"],
                                                     horizon=rows["horizon"])
    agg = w.groupby(["model", "horizon"], sort=False).sum(numeric_only=True).reset_index()
    agg[num] = agg[num].div(agg["pairs"], axis=0)
    return rows, agg


def pictures_robot(models: dict, episode_index: pd.DataFrame, val_ids: list[str]) -> tuple[str | None, list[str]]:
    """-> (robot, its val episodes): the first robot of the world models with validation episodes (None and all
    ``val_ids`` for a model without per-robot encoders)."""
    robots = list(getattr(next(iter(models.values())), "robots", []))
    if len(robots) <= 1:
        return (robots[0] if robots else None), val_ids
    of = robot_of(episode_index)
    for r in robots:
        ids = [e for e in val_ids if of[e] == r]
        if ids:
            return r, ids
    return None, val_ids
