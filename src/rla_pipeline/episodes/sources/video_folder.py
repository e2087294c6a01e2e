"""Import a folder of plain videos (phone clips, screen captures, simulator or FFmpeg output) as actionless episodes.

Every ``*.mp4 | *.mov | *.mkv | *.webm`` under the folder (recursively, sorted) becomes one episode with
``source="video_folder"``, ``kind="actionless"``, null ``action``/``proprio``. Frames are decoded upright (display
rotation applied), resized so the shorter side is ``image_size`` and centre-cropped to a square, and optionally
resampled to ``fps`` on the frames' own presentation times (variable-frame-rate phone clips).

Episode ids are deterministic: ``<name>-<relative path slug>-<8 hex of the relative path>``. The file's sha256 and
the import settings form the ``recipe_digest``: an unchanged file is skipped, a changed one is re-imported.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from rla_pipeline.episodes.format import Episode, EpisodeError, EpisodeMeta, EpisodeStore, make_steps
from rla_pipeline.episodes.sources.video_decode import decode_upright, resample_times
from rla_pipeline.episodes.video import VideoError
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import json_digest, sha256_file

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm")
IMPORTER_VERSION = "video_folder/1"
# One row per file an importer looked at; the same columns as the simulator's rows (plus source, path, status).
SOURCE_ROW_COLUMNS = [
    "episode_id", "task", "kind", "source", "seed", "success", "kept", "status", "reason", "num_frames", "path",
]


@dataclass
class VideoFolderConfig:
    """One folder of videos to import (an entry of ``ingestion.video_folders``)."""

    path: str  # folder to scan recursively
    name: str | None = None  # prefix of the episode ids; default: the folder's name
    task: str | None = None  # task of every episode; None: the name of the video's parent folder
    image_size: int = 128  # output frames are image_size x image_size (shorter side + centre crop)
    fps: float | None = None  # resample to this frame rate (only ever drops frames); None: keep every frame
    camera: str = "base_camera"  # camera name in the episode format
    max_frames: int | None = None  # cut longer videos (None: no limit)
    min_frames: int = 2  # shorter videos are rejected as bad input
    skip_bad: bool = False  # True: an undecodable file is recorded as skipped; False: raise EpisodeError

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("VideoFolderConfig.path is required")
        if self.image_size is not None and int(self.image_size) < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.fps is not None and float(self.fps) <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.min_frames < 1:
            raise ValueError("min_frames must be >= 1")

    @classmethod
    def from_dict(cls, d: dict | str) -> "VideoFolderConfig":
        """A dict, or just the folder path as a string."""
        return from_dict(cls, {"path": d} if isinstance(d, str) else d, where="ingestion.video_folders")


def list_videos(root: Path) -> list[Path]:
    """Video files under ``root`` (recursive, sorted, hidden and temp files left out)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in VIDEO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "x"


def video_episode_id(name: str, rel_path: str) -> str:
    """Deterministic id from the folder name and the file's path relative to it."""
    stem = rel_path.rsplit(".", 1)[0].replace("/", "__")
    h = hashlib.sha1(rel_path.encode()).hexdigest()[:8]
    return f"{_slug(name)}-{_slug(stem)[:80]}-{h}"


def _row(**kw) -> dict:
    row = dict.fromkeys(SOURCE_ROW_COLUMNS)
    row.update(kw)
    return row


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=SOURCE_ROW_COLUMNS)
    return df.astype({"kept": bool}) if len(df) else df


def import_video_file(
    video: Path, rel: str, cfg: VideoFolderConfig, store: EpisodeStore, task: str, episode_id: str
) -> dict:
    """Import one file; returns its row (status "written" or "exists"); raises EpisodeError on bad input."""
    digest = sha256_file(video)
    settings = {k: getattr(cfg, k) for k in ("image_size", "fps", "camera", "max_frames", "min_frames")}
    recipe = json_digest({"v": IMPORTER_VERSION, "file": digest, "task": task, **settings})
    if store.has(episode_id, recipe):
        n = store.read_meta(episode_id).num_frames
        return _row(episode_id=episode_id, task=task, kind="actionless", source="video_folder", kept=True,
                    status="exists", reason="", num_frames=n, path=str(video))
    try:
        dec = decode_upright(video, cfg.image_size, max_frames=cfg.max_frames)
    except VideoError as exc:
        raise EpisodeError(episode_id, video, exc.reason) from exc
    keep = resample_times(dec.times, cfg.fps) if cfg.fps else np.arange(len(dec.times))
    frames, times = dec.frames[keep], dec.times[keep] - dec.times[0]
    if len(frames) < cfg.min_frames:
        raise EpisodeError(episode_id, video, f"only {len(frames)} frame(s), fewer than min_frames={cfg.min_frames}")
    if cfg.fps:
        fps = float(cfg.fps) if len(frames) > 1 and dec.source_fps >= cfg.fps else _mean_rate(times, dec.source_fps)
    else:
        fps = _mean_rate(times, dec.source_fps)
    meta = EpisodeMeta(
        episode_id=episode_id, task=task, kind="actionless", source="video_folder", fps=fps,
        height=int(frames.shape[1]), width=int(frames.shape[2]), num_frames=len(frames), cameras=[cfg.camera],
        recipe_digest=recipe,
        extra={"source_file": rel, "file_sha256": digest, "codec": dec.codec, "rotation": dec.rotation,
               "source_height": dec.source_size[0], "source_width": dec.source_size[1],
               "source_fps": dec.source_fps, "importer": IMPORTER_VERSION},
    )
    steps = make_steps(meta.episode_index, task, fps, len(frames))
    steps["timestamp"] = times  # real presentation times (variable frame rate stays visible)
    store.write(Episode(meta=meta, frames={cfg.camera: frames}, steps=steps))
    return _row(episode_id=episode_id, task=task, kind="actionless", source="video_folder", kept=True,
                status="written", reason="", num_frames=len(frames), path=str(video))


def _mean_rate(times: np.ndarray, fallback: float) -> float:
    if len(times) > 1 and times[-1] > times[0]:
        return float((len(times) - 1) / (times[-1] - times[0]))
    return float(fallback or 30.0)


def import_video_folder(
    cfg: VideoFolderConfig | dict | str,
    store: EpisodeStore,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """Import every video under ``cfg.path`` into ``store``; one row per file (``SOURCE_ROW_COLUMNS``).

    ``status`` is "written" (new or changed file), "exists" (unchanged, nothing done) or "skipped" (bad file,
    only with ``skip_bad``; ``reason`` says why). Without ``skip_bad`` a bad file raises EpisodeError naming it.
    """
    if not isinstance(cfg, VideoFolderConfig):
        cfg = VideoFolderConfig.from_dict(cfg)
    root = Path(cfg.path)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    name = cfg.name or root.resolve().name
    videos = list_videos(root)
    if not videos:
        logger.warning("video folder %s holds no %s file", root, "/".join(VIDEO_EXTENSIONS))
    rows = []
    iterator = progress(videos, desc=f"import {name}") if progress else videos
    for video in iterator:
        rel = video.relative_to(root).as_posix()
        task = cfg.task or (video.parent.name if video.parent != root else name)
        eid = video_episode_id(name, rel)
        try:
            rows.append(import_video_file(video, rel, cfg, store, task, eid))
        except EpisodeError as exc:
            if not cfg.skip_bad:
                raise
            logger.warning("skipping %s: %s", video, exc.reason)
            rows.append(_row(episode_id=eid, task=task, kind="actionless", source="video_folder", kept=False,
                             status="skipped", reason=exc.reason, num_frames=0, path=str(video)))
    out = rows_frame(rows)
    logger.info("video folder %s: %s", root, out["status"].value_counts().to_dict() if len(out) else "empty")
    return out
