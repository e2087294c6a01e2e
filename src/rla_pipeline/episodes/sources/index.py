"""After every source ran: validate the episodes they listed, build the episode index and the ingestion summary.

Sources (simulator, video folders, LeRobot datasets) each return one row per attempt/file/episode with at least
``episode_id, task, kind, kept`` (and ``seed, success, reason, num_frames``; importers add ``source, status,
path``). ``status`` is "written" (made in this run), "exists" (unchanged, nothing done) or "skipped".
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from rla_pipeline.episodes.format import EpisodeError, EpisodeStore, validate_index

logger = logging.getLogger(__name__)

SKIPPED_COLUMNS = ["episode_id", "task", "kind", "source", "path", "reason"]
SUMMARY_COLUMNS = [
    "task", "kind", "episodes", "frames", "successes", "attempted", "demo_success_rate", "skipped",
]


def combine_source_rows(frames: Iterable[pd.DataFrame | None]) -> pd.DataFrame:
    """Concatenate the rows of every source, filling the columns some sources do not write."""
    parts = [f for f in frames if f is not None and len(f)]
    if not parts:
        return pd.DataFrame(columns=["episode_id", "task", "kind", "source", "seed", "success", "kept", "status",
                                     "reason", "num_frames", "path"])
    rows = pd.concat(parts, ignore_index=True)
    for col, default in (("source", "maniskill"), ("status", None), ("reason", ""), ("path", ""), ("success", None)):
        if col not in rows:
            rows[col] = default
    rows["kept"] = rows["kept"].fillna(False).astype(bool)
    # the simulator's rows say kept/not kept only: a kept row without status counts as written in this run
    rows["status"] = rows["status"].where(rows["status"].notna(), np.where(rows["kept"], "written", "skipped"))
    rows["reason"] = rows["reason"].fillna("").astype(str)
    rows["path"] = rows["path"].fillna("").astype(str)
    return rows


def build_episode_index(
    store: EpisodeStore,
    rows: pd.DataFrame,
    skip_bad_episodes: bool = False,
    decode: str = "new",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate each kept episode of ``rows`` in ``store``; returns ``(index, skipped)``.

    decode: "new" decodes the videos of episodes written in this run and checks the others from their
    container (a re-run with nothing changed decodes nothing), "all" decodes every one, "none" none.
    skip_bad_episodes: False raises EpisodeError naming the episode and file; True drops the episode and
    records it in ``skipped`` with the reason. Duplicate episode ids always raise EpisodeError.
    Source rows not kept (failed demos, undecodable files in skip mode) are carried into ``skipped`` too.
    """
    if decode not in ("new", "all", "none"):
        raise ValueError(f"decode must be new|all|none, got {decode!r}")
    kept = rows[rows["kept"]]
    validate_index(kept[["episode_id"]].reset_index(drop=True), where=f"ingestion sources -> {store.root}")
    skipped = [
        {c: r.get(c) for c in SKIPPED_COLUMNS}
        for r in rows[~rows["kept"]].to_dict("records")
    ]
    good: list[str] = []
    for r in kept.to_dict("records"):
        eid = r["episode_id"]
        full = decode == "all" or (decode == "new" and r["status"] == "written")
        try:
            store.validate(eid, decode=full)
        except EpisodeError as exc:
            if not skip_bad_episodes:
                raise
            logger.warning("dropping bad episode %s: %s", eid, exc)
            skipped.append({**{c: r.get(c) for c in SKIPPED_COLUMNS}, "path": _store_relative(store, exc.path),
                            "reason": exc.reason})
            continue
        good.append(eid)
    index = store.index(good)
    validate_index(index, where=f"{store.root}")
    index = index.sort_values("episode_id").reset_index(drop=True)
    skipped_df = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS).astype(
        {"episode_id": str, "task": str, "kind": str, "source": str, "path": str, "reason": str}
    )
    return index, skipped_df


def _store_relative(store: EpisodeStore, path: str) -> str:
    """A file inside the store as a path relative to its root (outputs hold no absolute paths); others as given."""
    try:
        return Path(path).resolve().relative_to(Path(store.root).resolve()).as_posix()
    except ValueError:
        return str(path)


def ingestion_summary(index: pd.DataFrame, rows: pd.DataFrame, skipped: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, kind): episodes and frames in the index, successes, attempts, demo success rate, skips.

    ``attempted`` counts every source row (a simulator attempt, an imported file or episode); the demo success
    rate is successful attempts / attempts whose outcome is recorded, for ``kind == "demo"`` (NaN for other kinds).
    An outcome is recorded when the source row says True/False, or, for a row without one (an importer's
    "exists" row), when the episode's metadata in ``index`` does (``EpisodeMeta.success``; None = unknown). Demos
    with no recorded outcome at all (a LeRobot dataset without ``next.success``) give NaN, unknown, not 0.
    """
    keys = sorted(
        set(zip(index["task"], index["kind"])) | set(zip(rows["task"], rows["kind"]))
        | set(zip(skipped["task"], skipped["kind"]))
    )
    out = []
    for task, kind in keys:
        idx = index[(index["task"] == task) & (index["kind"] == kind)]
        src = rows[(rows["task"] == task) & (rows["kind"] == kind)]
        skp = skipped[(skipped["task"] == task) & (skipped["kind"] == kind)]
        outcome = _recorded_outcomes(src, index)
        attempted = len(src)
        known = int(outcome.notna().sum())
        out.append({
            "task": task,
            "kind": kind,
            "episodes": len(idx),
            "frames": int(idx["num_frames"].sum()) if len(idx) else 0,
            "successes": int(idx["success"].fillna(False).astype(bool).sum()) if len(idx) else 0,
            "attempted": attempted,
            "demo_success_rate": sum(v is True for v in outcome) / known if kind == "demo" and known else float("nan"),
            "skipped": len(skp),
        })
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS).astype(
        {"episodes": "int64", "frames": "int64", "successes": "int64", "attempted": "int64", "skipped": "int64",
         "demo_success_rate": "float64"}
    )


def _known(v) -> bool | None:
    """True/False for a recorded outcome; None for a missing one (None, NaN, pd.NA)."""
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    return bool(v)


def _recorded_outcomes(src: pd.DataFrame, index: pd.DataFrame) -> pd.Series:
    """Per source row: its recorded success (True/False) or None when unknown; a row without one takes the
    episode's ``success`` from ``index`` (an unchanged imported episode's row carries no outcome of its own)."""
    from_index = (dict(zip(index["episode_id"], index["success"]))
                  if len(index) and "success" in index and "episode_id" in index else {})
    out = []
    for eid, v in zip(src["episode_id"], src["success"]):
        k = _known(v)
        out.append(k if k is not None else _known(from_index.get(eid)))
    return pd.Series(out, index=src.index, dtype=object)


def _metric_name(text: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces only (LeRobot tasks are free text)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]+", "_", str(text))[:200]


def summary_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """Flat numbers for MLflow: episodes/frames per kind and task, demo success rate per task."""
    metrics: dict[str, float] = {}
    for r in summary.to_dict("records"):
        task = _metric_name(r["task"])
        tag = f"{r['kind']}.{task}"
        metrics[f"ingestion.episodes.{tag}"] = r["episodes"]
        metrics[f"ingestion.frames.{tag}"] = r["frames"]
        metrics[f"ingestion.skipped.{tag}"] = r["skipped"]
        if r["kind"] == "demo" and r["demo_success_rate"] == r["demo_success_rate"]:
            metrics[f"demo_success_rate.{task}"] = r["demo_success_rate"]
    metrics["ingestion.episodes.total"] = float(summary["episodes"].sum()) if len(summary) else 0.0
    metrics["ingestion.frames.total"] = float(summary["frames"].sum()) if len(summary) else 0.0
    return metrics


@dataclass
class IngestionConfig:
    """The ``ingestion:`` parameter block (conf/base/parameters_ingestion.yml)."""

    simulation: dict = field(default_factory=dict)  # SimulationConfig fields (episodes/sources/maniskill.py)
    run_simulation: bool = True  # False: the three simulate_* nodes do nothing (no ManiSkill import)
    video_folders: list = field(default_factory=list)  # VideoFolderConfig dicts (or plain folder paths)
    lerobot_datasets: list = field(default_factory=list)  # LeRobotConfig dicts (or plain folder paths)
    skip_bad_episodes: bool = False  # False: a bad episode stops the run with EpisodeError; True: drop + record it
    validate_decode: str = "new"  # "new" | "all" | "none": which episodes build_episode_index decodes fully

    def __post_init__(self) -> None:
        if self.validate_decode not in ("new", "all", "none"):
            raise ValueError(f"ingestion.validate_decode must be new|all|none, got {self.validate_decode!r}")
        self.video_folders = list(self.video_folders or [])
        self.lerobot_datasets = list(self.lerobot_datasets or [])
        self.simulation = dict(self.simulation or {})
