"""Import a LeRobot dataset folder (codebase v3.0, and the older v2.x) into the episode store.

LeRobot v3.0 layout (``CODEBASE_VERSION = "v3.0"`` in huggingface/lerobot ``src/lerobot/datasets/utils.py``)::

    meta/info.json                                   codebase_version, fps, robot_type, features, data_path, video_path
    meta/tasks.parquet                               index: task string, column task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: episode_index, tasks, length,
                                                     data/chunk_index, data/file_index, videos/<key>/chunk_index,
                                                     videos/<key>/file_index, videos/<key>/from_timestamp, .../to_timestamp
    data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet           MANY episodes per file (episode_index,
                                                     frame_index, timestamp, index, task_index, action, observation.state)
    videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4  MANY episodes back to back (AV1 by default)

Frame ``i`` of an episode is the video frame shown at ``from_timestamp + timestamp[i]`` (as LeRobot itself reads it,
tolerance ``1/fps - 1e-4``). LeRobot v2.x: one parquet and one mp4 per episode
(``data/chunk-000/episode_000000.parquet``, ``videos/chunk-000/<video_key>/episode_000000.mp4``),
``meta/episodes.jsonl`` and ``meta/tasks.jsonl``; ``from_timestamp`` is 0.

Episode ids: ``<name>-ep<episode_index:06d>``. The recipe digest covers the bytes of the episode's parquet and
video files plus the import settings: an unchanged dataset re-imports nothing.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from rla_pipeline.episodes.format import Episode, EpisodeError, EpisodeMeta, EpisodeStore, make_steps
from rla_pipeline.episodes.sources.video_decode import decode_at_times
from rla_pipeline.episodes.sources.video_folder import SOURCE_ROW_COLUMNS, rows_frame
from rla_pipeline.episodes.video import VideoError
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import json_digest, sha256_file

logger = logging.getLogger(__name__)

IMPORTER_VERSION = "lerobot/1"
IMAGE_KEY_PREFIX = "observation.images."


@dataclass
class LeRobotConfig:
    """One LeRobot dataset folder to import (an entry of ``ingestion.lerobot_datasets``)."""

    path: str  # dataset root (holds meta/info.json)
    name: str | None = None  # prefix of the episode ids; default: the folder's name
    use_actions: bool = True  # False: import as actionless episodes (action and proprio null)
    use_state: bool | None = None  # keep `state_key` as proprio; None: same as use_actions
    cameras: list[str] | None = None  # video keys ("observation.images.top" or "top"); None: the first video key
    action_key: str = "action"
    state_key: str | None = "observation.state"
    image_size: int = 128  # shorter side to image_size, then centre crop to a square
    episodes: list[int] | None = None  # LeRobot episode indices to import; None: all
    task: str | None = None  # task name for every episode; None: the dataset's task text of the episode
    kind: str | None = None  # None: "demo" with actions, "actionless" without
    robot: str | None = None  # None: info.json robot_type
    skip_bad: bool = False  # True: a bad episode is recorded as skipped; False: raise EpisodeError

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("LeRobotConfig.path is required")
        if self.kind is not None and self.kind not in ("demo", "play", "actionless"):
            raise ValueError(f"kind must be demo|play|actionless, got {self.kind!r}")
        if self.kind == "actionless" and self.use_actions:
            raise ValueError("kind 'actionless' needs use_actions: false")
        if self.kind in ("demo", "play") and not self.use_actions:
            raise ValueError(f"kind {self.kind!r} needs use_actions: true")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")

    @classmethod
    def from_dict(cls, d: dict | str) -> "LeRobotConfig":
        return from_dict(cls, {"path": d} if isinstance(d, str) else d, where="ingestion.lerobot_datasets")


@dataclass
class EpisodeRef:
    """Where one LeRobot episode lives on disk."""

    episode_index: int
    length: int
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # video key -> (mp4, from_timestamp)


class LeRobotDataset:
    """Reads the metadata of a LeRobot dataset folder (v3.0 or v2.x) into :class:`EpisodeRef` rows."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.exists():
            raise FileNotFoundError(f"{self.root} is not a LeRobot dataset: {info_path} is missing")
        self.info = json.loads(info_path.read_text())
        self.version = str(self.info.get("codebase_version", ""))
        self.fps = float(self.info["fps"])
        self.features: dict = self.info.get("features", {})
        self.video_keys = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        major = self.version.lstrip("v").split(".")[0]
        if major not in ("2", "3"):
            raise ValueError(f"{info_path}: unsupported LeRobot codebase_version {self.version!r} (v2.x or v3.0)")
        self.is_v3 = major == "3"

    def feature_dim(self, key: str) -> int | None:
        shape = self.features.get(key, {}).get("shape")
        return int(np.prod(shape)) if shape else None

    def _tasks_v3(self) -> dict[int, str]:
        path = self.root / "meta" / "tasks.parquet"
        if not path.exists():
            return {}
        df = pd.read_parquet(path)
        if "task" in df.columns:  # some writers keep the text as a column
            return dict(zip(df["task_index"].astype(int), df["task"].astype(str)))
        return {int(i): str(t) for t, i in zip(df.index, df["task_index"])}

    def episodes(self) -> list[EpisodeRef]:
        return self._episodes_v3() if self.is_v3 else self._episodes_v2()

    def _episodes_v3(self) -> list[EpisodeRef]:
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.root}/meta/episodes holds no parquet file")
        eps = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        data_tpl = self.info.get("data_path", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")
        video_tpl = self.info.get("video_path") or "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        task_names = self._tasks_v3()
        refs = []
        for row in eps.sort_values("episode_index").to_dict("records"):
            tasks = row.get("tasks")
            tasks = [str(t) for t in tasks] if tasks is not None and len(tasks) else []
            data_file = self.root / data_tpl.format(
                chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
            )
            videos = {}
            for key in self.video_keys:
                if f"videos/{key}/chunk_index" not in row:
                    continue
                rel = video_tpl.format(
                    video_key=key,
                    chunk_index=int(row[f"videos/{key}/chunk_index"]),
                    file_index=int(row[f"videos/{key}/file_index"]),
                )
                videos[key] = (self.root / rel, float(row.get(f"videos/{key}/from_timestamp", 0.0) or 0.0))
            if not tasks and task_names:
                tasks = [task_names.get(0, "")]
            refs.append(EpisodeRef(int(row["episode_index"]), int(row["length"]), tasks, data_file, videos))
        return refs

    def _episodes_v2(self) -> list[EpisodeRef]:
        path = self.root / "meta" / "episodes.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        chunks_size = int(self.info.get("chunks_size", 1000))
        data_tpl = self.info.get("data_path", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
        video_tpl = self.info.get("video_path") or "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        refs = []
        for row in sorted(rows, key=lambda r: r["episode_index"]):
            i = int(row["episode_index"])
            chunk = i // chunks_size
            videos = {
                key: (self.root / video_tpl.format(episode_chunk=chunk, video_key=key, episode_index=i), 0.0)
                for key in self.video_keys
            }
            data_file = self.root / data_tpl.format(episode_chunk=chunk, episode_index=i)
            refs.append(EpisodeRef(i, int(row["length"]), [str(t) for t in row.get("tasks", [])], data_file, videos))
        return refs


def _camera_name(key: str) -> str:
    name = key[len(IMAGE_KEY_PREFIX):] if key.startswith(IMAGE_KEY_PREFIX) else key
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "camera"


def _resolve_cameras(ds: LeRobotDataset, wanted: list[str] | None) -> list[str]:
    if not ds.video_keys:
        raise ValueError(f"{ds.root}: the dataset has no video feature (image-in-parquet datasets are not supported)")
    if not wanted:
        return [ds.video_keys[0]]
    keys = []
    for w in wanted:
        key = w if w in ds.video_keys else IMAGE_KEY_PREFIX + w
        if key not in ds.video_keys:
            raise ValueError(f"{ds.root}: camera {w!r} is not a video key of the dataset {ds.video_keys}")
        keys.append(key)
    return keys


def _stack(values: pd.Series, key: str, eid: str, path: Path) -> np.ndarray:
    try:
        arr = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in values])
    except (ValueError, TypeError) as exc:
        raise EpisodeError(eid, path, f"column {key!r} has rows of different shapes or non-numbers ({exc})") from exc
    return arr


class _Digests:
    """sha256 per file, computed once per import (a v3 file holds many episodes)."""

    def __init__(self) -> None:
        self._cache: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self._cache:
            self._cache[path] = sha256_file(path)
        return self._cache[path]


class _Tables:
    """Parquet data files read once per import, split by episode."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._groups: dict[int, pd.DataFrame] = {}

    def episode_rows(self, path: Path, episode_index: int) -> pd.DataFrame | None:
        if path != self._path:
            df = pd.read_parquet(path)
            self._groups = {int(k): g for k, g in df.groupby("episode_index", sort=False)}
            self._path = path
        return self._groups.get(episode_index)


def import_lerobot(
    cfg: LeRobotConfig | dict | str,
    store: EpisodeStore,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """Import the episodes of a LeRobot dataset folder into ``store``; one row per episode (``SOURCE_ROW_COLUMNS``).

    Raises EpisodeError naming the episode and the file at fault (unless ``skip_bad``: then the row has
    ``status="skipped"`` and the ``reason``).
    """
    if not isinstance(cfg, LeRobotConfig):
        cfg = LeRobotConfig.from_dict(cfg)
    ds = LeRobotDataset(cfg.path)
    name = cfg.name or ds.root.resolve().name
    cam_keys = _resolve_cameras(ds, cfg.cameras)
    use_state = cfg.use_actions if cfg.use_state is None else cfg.use_state
    kind = cfg.kind or ("demo" if cfg.use_actions else "actionless")
    refs = ds.episodes()
    if cfg.episodes is not None:
        wanted = {int(i) for i in cfg.episodes}
        refs = [r for r in refs if r.episode_index in wanted]
    digests, tables = _Digests(), _Tables()
    settings = {
        "v": IMPORTER_VERSION, "use_actions": cfg.use_actions, "use_state": use_state, "cameras": cam_keys,
        "action_key": cfg.action_key, "state_key": cfg.state_key, "image_size": cfg.image_size, "task": cfg.task,
        "kind": kind, "robot": cfg.robot,
    }
    rows = []
    for ref in progress(refs, desc=f"import {name}") if progress else refs:
        eid = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-ep{ref.episode_index:06d}"
        task = cfg.task or (ref.tasks[0] if ref.tasks else name)
        base = dict(episode_id=eid, task=task, kind=kind, source="lerobot", path=str(ref.data_file))
        try:
            row = _import_episode(ds, ref, cfg, store, eid, task, kind, cam_keys, use_state, settings, digests, tables)
        except EpisodeError as exc:
            if not cfg.skip_bad:
                raise
            logger.warning("skipping LeRobot episode %s: %s", eid, exc)
            row = {**base, "kept": False, "status": "skipped", "reason": f"{exc.path}: {exc.reason}", "num_frames": 0}
        rows.append({**dict.fromkeys(SOURCE_ROW_COLUMNS), **base, **row})
    out = rows_frame(rows)
    logger.info("LeRobot %s (%s): %s", ds.root, ds.version, out["status"].value_counts().to_dict() if len(out) else "empty")
    return out


def _import_episode(ds, ref, cfg, store, eid, task, kind, cam_keys, use_state, settings, digests, tables) -> dict:
    for path in [ref.data_file] + [ref.videos[k][0] for k in cam_keys if k in ref.videos]:
        if not path.exists():
            raise EpisodeError(eid, path, "file listed by the dataset's metadata does not exist")
    missing = [k for k in cam_keys if k not in ref.videos]
    if missing:
        raise EpisodeError(eid, ds.root / "meta", f"no video location for camera(s) {missing}")
    recipe = json_digest(
        {**settings, "episode_index": ref.episode_index, "data": digests(ref.data_file),
         "videos": {k: [digests(ref.videos[k][0]), ref.videos[k][1]] for k in cam_keys}}
    )
    if store.has(eid, recipe):
        return {"kept": True, "status": "exists", "reason": "", "num_frames": store.read_meta(eid).num_frames}

    try:
        steps_src = tables.episode_rows(ref.data_file, ref.episode_index)
    except Exception as exc:
        raise EpisodeError(eid, ref.data_file, f"unreadable parquet ({type(exc).__name__}: {exc})") from exc
    if steps_src is None or len(steps_src) == 0:
        raise EpisodeError(eid, ref.data_file, f"no rows for episode_index {ref.episode_index} (empty episode)")
    steps_src = steps_src.sort_values("frame_index")
    n = len(steps_src)
    if n != ref.length:
        raise EpisodeError(eid, ref.data_file, f"{n} rows but the episode metadata says length {ref.length}")
    if "timestamp" in steps_src:
        ts = steps_src["timestamp"].to_numpy(dtype=np.float64)
    else:
        ts = steps_src["frame_index"].to_numpy(dtype=np.float64) / ds.fps

    actions = proprio = None
    if cfg.use_actions:
        if cfg.action_key not in steps_src:
            raise EpisodeError(eid, ref.data_file, f"no action column {cfg.action_key!r} (use_actions: true)")
        actions = _stack(steps_src[cfg.action_key], cfg.action_key, eid, ref.data_file)
    if use_state and cfg.state_key and cfg.state_key in steps_src:
        proprio = _stack(steps_src[cfg.state_key], cfg.state_key, eid, ref.data_file)
    for name_, arr in (("action", actions), ("state", proprio)):
        if arr is not None and not np.isfinite(arr).all():
            bad = np.where(~np.isfinite(arr).all(axis=1))[0]
            raise EpisodeError(eid, ref.data_file, f"{name_} has NaN/Inf values in frames {bad[:5].tolist()}")

    frames = {}
    tolerance = 1.0 / ds.fps - 1e-4
    for key in cam_keys:
        video, from_ts = ref.videos[key]
        try:
            frames[_camera_name(key)] = decode_at_times(video, from_ts + ts, cfg.image_size, tolerance)
        except VideoError as exc:
            raise EpisodeError(eid, video, exc.reason) from exc
        if len(frames[_camera_name(key)]) != n:  # decode_at_times answers every query; keep the check explicit
            raise EpisodeError(eid, video, f"{len(frames[_camera_name(key)])} frames for {n} table rows")

    reward = steps_src["next.reward"].to_numpy(np.float32) if "next.reward" in steps_src else None
    success = steps_src["next.success"].to_numpy(bool) if "next.success" in steps_src else None
    done = steps_src["next.done"].to_numpy(bool) if "next.done" in steps_src else None
    first = next(iter(frames.values()))
    meta = EpisodeMeta(
        episode_id=eid, task=task, kind=kind, source="lerobot", fps=ds.fps,
        height=int(first.shape[1]), width=int(first.shape[2]), num_frames=n, cameras=list(frames),
        robot=cfg.robot or ds.info.get("robot_type"),
        action_dim=None if actions is None else int(actions.shape[1]),
        proprio_dim=None if proprio is None else int(proprio.shape[1]),
        success=None if success is None else bool(success.any()),
        recipe_digest=recipe,
        extra={"lerobot_root": str(ds.root), "lerobot_version": ds.version, "lerobot_episode_index": ref.episode_index,
               "lerobot_tasks": ref.tasks, "video_keys": cam_keys, "importer": IMPORTER_VERSION},
    )
    steps = make_steps(meta.episode_index, task, ds.fps, n, actions=actions, proprio=proprio,
                       rewards=reward, success=success, done=done)
    steps["timestamp"] = ts - ts[0]
    try:
        store.write(Episode(meta=meta, frames=frames, steps=steps))
    except EpisodeError as exc:  # name the source file, not the store folder
        raise EpisodeError(eid, ref.data_file, exc.reason) from exc
    return {"kept": True, "status": "written", "reason": "", "num_frames": n,
            "success": meta.success}
