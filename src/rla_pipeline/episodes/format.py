"""The episode contract every stage reads: one format for simulated, imported and actionless episodes.

Close to the LeRobot layout, one folder per episode under a store root::

    <root>/<episode_id>/meta.json          EpisodeMeta (fps, image size, robot, control mode, action dim, source...)
    <root>/<episode_id>/steps.parquet      one row per frame (STEP_SCHEMA)
    <root>/<episode_id>/videos/<cam>.mp4   RGB video per camera (H.264 on write; any FFmpeg codec on read)
    <root>/<episode_id>/masks/<cam>.npz    optional foreground mask, bool (T, H, W) under key "mask"

Row ``t`` of the step table describes frame ``t``: the observation at ``t`` and the action applied after it.
Actionless episodes are first-class: same layout, ``action`` and ``proprio`` null, ``meta.action_dim`` None.

Every problem found on read or write raises :class:`EpisodeError`, which names the episode and the file.
Writes are atomic: an episode folder appears complete or not at all.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rla_pipeline.episodes.video import VideoError, decode_video, encode_video, iter_video_frames
from rla_pipeline.utils.atomic import atomic_dir, atomic_write_text
from rla_pipeline.utils.hashing import sha256_file

logger = logging.getLogger(__name__)

FORMAT_VERSION = "rla-episodes/1"
KINDS = ("demo", "play", "actionless")
SOURCES = ("maniskill", "video_folder", "lerobot", "synthetic")

STEP_SCHEMA = pa.schema(
    [
        ("episode_index", pa.int64()),
        ("frame_index", pa.int64()),
        ("timestamp", pa.float64()),
        ("task", pa.string()),
        ("action", pa.list_(pa.float32())),
        ("proprio", pa.list_(pa.float32())),
        ("reward", pa.float32()),
        ("success", pa.bool_()),
        ("done", pa.bool_()),
    ]
)
STEP_COLUMNS = tuple(STEP_SCHEMA.names)


class EpisodeError(ValueError):
    """A bad episode: the message names the episode id and the file at fault."""

    def __init__(self, episode_id: str, path: str | os.PathLike, reason: str):
        self.episode_id = episode_id
        self.path = str(path)
        self.reason = reason
        super().__init__(f"episode {episode_id!r} ({path}): {reason}")


@dataclass
class EpisodeMeta:
    """Metadata of one episode (``meta.json``)."""

    episode_id: str
    task: str
    kind: str  # "demo" (expert, successful), "play" (exploration with actions), "actionless" (video only)
    source: str  # "maniskill" | "video_folder" | "lerobot" | "synthetic"
    fps: float
    height: int
    width: int
    num_frames: int
    cameras: list[str] = field(default_factory=lambda: ["base_camera"])
    robot: str | None = None
    control_mode: str | None = None
    action_dim: int | None = None  # None for actionless episodes
    proprio_dim: int | None = None
    success: bool | None = None  # episode-level outcome when known
    seed: int | None = None
    has_mask: bool = False
    recipe_digest: str = ""  # digest of whatever produced the episode: unchanged digest -> no re-generation
    episode_index: int = -1  # filled from the id on write when left at -1
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"episode {self.episode_id!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.source not in SOURCES:
            raise ValueError(f"episode {self.episode_id!r}: source must be one of {SOURCES}, got {self.source!r}")
        if not self.episode_id or "/" in self.episode_id or self.episode_id.startswith("."):
            raise ValueError(f"bad episode id {self.episode_id!r}: non-empty, no '/', not starting with '.'")
        if self.episode_index < 0:
            self.episode_index = stable_episode_index(self.episode_id)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpisodeMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def stable_episode_index(episode_id: str) -> int:
    """A stable 48-bit integer for an episode id (same id -> same index on every machine)."""
    return int(hashlib.sha1(episode_id.encode()).hexdigest()[:12], 16)


@dataclass
class Episode:
    """One episode in memory: frames per camera uint8 (T, H, W, 3), the step table, optional masks (T, H, W)."""

    meta: EpisodeMeta
    frames: dict[str, np.ndarray]
    steps: pd.DataFrame
    masks: dict[str, np.ndarray] | None = None


def make_steps(
    episode_index: int,
    task: str,
    fps: float,
    num_frames: int,
    actions: np.ndarray | None = None,
    proprio: np.ndarray | None = None,
    rewards: np.ndarray | None = None,
    success: np.ndarray | None = None,
    done: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a step table of ``num_frames`` rows. ``actions`` (T, A) and ``proprio`` (T, P) may be None (null)."""
    t = num_frames

    def _rows(x: np.ndarray | None) -> list:
        if x is None:
            return [None] * t
        x = np.asarray(x, dtype=np.float32)
        return [row.tolist() for row in x]

    return pd.DataFrame(
        {
            "episode_index": np.full(t, episode_index, dtype=np.int64),
            "frame_index": np.arange(t, dtype=np.int64),
            "timestamp": np.arange(t, dtype=np.float64) / float(fps),
            "task": [task] * t,
            "action": _rows(actions),
            "proprio": _rows(proprio),
            "reward": (np.asarray(rewards, dtype=np.float32) if rewards is not None else np.full(t, np.nan, np.float32)),
            "success": (np.asarray(success, dtype=bool) if success is not None else np.zeros(t, bool)),
            "done": (np.asarray(done, dtype=bool) if done is not None else np.arange(t) == t - 1),
        }
    )


def _vector_column(steps: pd.DataFrame, col: str) -> np.ndarray | None:
    """Stack a list column to float32 (T, K); None when every row is null; raises ValueError on ragged rows."""
    values = steps[col].tolist()
    present = [v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values]
    if not any(present):
        return None
    if not all(present):
        missing = [i for i, p in enumerate(present) if not p]
        raise ValueError(f"column {col!r} is null in rows {missing[:5]} but not in others")
    lengths = {len(v) for v in values}
    if len(lengths) != 1:
        raise ValueError(f"column {col!r} has rows of different lengths {sorted(lengths)}")
    return np.asarray([np.asarray(v, dtype=np.float32) for v in values], dtype=np.float32)


def episode_actions(steps: pd.DataFrame) -> np.ndarray | None:
    """The actions of a step table as float32 (T, A), or None for an actionless episode."""
    return _vector_column(steps, "action")


def episode_proprio(steps: pd.DataFrame) -> np.ndarray | None:
    return _vector_column(steps, "proprio")


def validate_steps(meta: EpisodeMeta, steps: pd.DataFrame, where: str | os.PathLike) -> None:
    """Check a step table against its metadata; raises EpisodeError naming the episode and ``where``."""
    eid = meta.episode_id

    def fail(reason: str) -> None:
        raise EpisodeError(eid, where, reason)

    missing = [c for c in STEP_COLUMNS if c not in steps.columns]
    if missing:
        fail(f"step table lacks columns {missing}")
    if len(steps) == 0 or meta.num_frames == 0:
        fail("empty episode (no frames)")
    if len(steps) != meta.num_frames:
        fail(f"step table has {len(steps)} rows but meta.num_frames is {meta.num_frames}")
    if not np.array_equal(steps["frame_index"].to_numpy(), np.arange(len(steps))):
        fail("frame_index is not 0..T-1 in order")
    if steps["episode_index"].nunique() != 1:
        fail("step table mixes several episode_index values")
    for col, dim_name in (("action", "action_dim"), ("proprio", "proprio_dim")):
        try:
            arr = _vector_column(steps, col)
        except ValueError as exc:
            fail(str(exc))
        dim = getattr(meta, dim_name)
        if arr is None:
            if dim is not None and col == "action":
                fail(f"meta.action_dim is {dim} but every action is null (actionless episodes need action_dim None)")
            continue
        if dim is None:
            fail(f"{col} values present but meta.{dim_name} is None")
        if arr.shape[1] != dim:
            fail(f"{col} vectors have {arr.shape[1]} dims but meta.{dim_name} is {dim}")
        if not np.isfinite(arr).all():
            bad = np.where(~np.isfinite(arr).all(axis=1))[0]
            fail(f"{col} has NaN/Inf values in frames {bad[:5].tolist()}")
    if meta.kind == "actionless" and steps["action"].notna().any():
        fail("kind is 'actionless' but actions are present")
    reward = steps["reward"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(reward).any():
        fail("reward has Inf values")


def validate_frames(meta: EpisodeMeta, cam: str, frames: np.ndarray, where: str | os.PathLike) -> None:
    eid = meta.episode_id
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise EpisodeError(eid, where, f"frames of camera {cam!r} must be (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise EpisodeError(eid, where, f"frames of camera {cam!r} must be uint8, got {frames.dtype}")
    if len(frames) == 0:
        raise EpisodeError(eid, where, "empty episode (no frames)")
    if len(frames) != meta.num_frames:
        raise EpisodeError(
            eid, where, f"camera {cam!r} has {len(frames)} frames but the step table has {meta.num_frames} rows"
        )
    if frames.shape[1:3] != (meta.height, meta.width):
        raise EpisodeError(
            eid, where, f"camera {cam!r} frames are {frames.shape[1:3]} but meta says {(meta.height, meta.width)}"
        )


def validate_episode(ep: Episode, where: str | os.PathLike = "<memory>") -> None:
    """All in-memory checks of an episode before it is written."""
    meta = ep.meta
    validate_steps(meta, ep.steps, where)
    if set(ep.frames) != set(meta.cameras):
        raise EpisodeError(meta.episode_id, where, f"cameras {sorted(ep.frames)} differ from meta.cameras {meta.cameras}")
    for cam, frames in ep.frames.items():
        validate_frames(meta, cam, np.asarray(frames), where)
    if meta.has_mask:
        if not ep.masks or set(ep.masks) != set(meta.cameras):
            raise EpisodeError(meta.episode_id, where, "meta.has_mask is true but masks are missing for some camera")
        for cam, m in ep.masks.items():
            if m.shape != (meta.num_frames, meta.height, meta.width):
                raise EpisodeError(
                    meta.episode_id, where, f"mask of camera {cam!r} is {m.shape}, expected {(meta.num_frames, meta.height, meta.width)}"
                )


def _steps_to_table(steps: pd.DataFrame) -> pa.Table:
    df = steps.loc[:, list(STEP_COLUMNS)].copy()
    return pa.Table.from_pandas(df, schema=STEP_SCHEMA, preserve_index=False)


def validate_index(index: pd.DataFrame, where: str | os.PathLike = "<episode index>") -> None:
    """Reject duplicate episode ids (or indices) in an index of episodes from several sources."""
    dup = index["episode_id"][index["episode_id"].duplicated()]
    if len(dup):
        eid = str(dup.iloc[0])
        raise EpisodeError(eid, where, f"duplicate episode id (appears {int((index['episode_id'] == eid).sum())} times)")
    if "episode_index" in index:
        dup_i = index["episode_index"][index["episode_index"].duplicated()]
        if len(dup_i):
            eid = str(index.loc[index["episode_index"] == dup_i.iloc[0], "episode_id"].iloc[0])
            raise EpisodeError(eid, where, f"duplicate episode_index {int(dup_i.iloc[0])}")


class EpisodeStore:
    """A folder of episodes (see the module docstring). Cheap to create: nothing is read until asked."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.root)!r})"

    # ---- paths -------------------------------------------------------------------------------------
    def episode_dir(self, eid: str) -> Path:
        return self.root / eid

    def resolve(self, relative: str | os.PathLike) -> Path:
        """A ``path`` of :meth:`index` (relative to the store root) as a path under this store's root."""
        return self.root / Path(relative)

    def video_path(self, eid: str, cam: str | None = None) -> Path:
        cam = cam or self.read_meta(eid).cameras[0]
        return self.episode_dir(eid) / "videos" / f"{cam}.mp4"

    def mask_path(self, eid: str, cam: str) -> Path:
        return self.episode_dir(eid) / "masks" / f"{cam}.npz"

    # ---- listing -----------------------------------------------------------------------------------
    def episode_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists()
        )

    def __contains__(self, eid: str) -> bool:
        return (self.episode_dir(eid) / "meta.json").exists()

    def has(self, eid: str, recipe_digest: str | None = None) -> bool:
        """True when the episode exists (and, when given, was made by the same recipe)."""
        if eid not in self:
            return False
        if recipe_digest is None:
            return True
        try:
            return self.read_meta(eid).recipe_digest == recipe_digest
        except EpisodeError:
            return False

    # ---- reading -----------------------------------------------------------------------------------
    def read_meta(self, eid: str) -> EpisodeMeta:
        path = self.episode_dir(eid) / "meta.json"
        if not path.exists():
            raise EpisodeError(eid, path, "no such episode (meta.json missing)")
        try:
            meta = EpisodeMeta.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise EpisodeError(eid, path, f"unreadable meta.json ({exc})") from exc
        if meta.episode_id != eid:
            raise EpisodeError(eid, path, f"meta.json says episode_id {meta.episode_id!r}: folder copied under another name?")
        return meta

    def read_steps(self, eid: str) -> pd.DataFrame:
        path = self.episode_dir(eid) / "steps.parquet"
        try:
            return pq.read_table(path).to_pandas()
        except Exception as exc:
            raise EpisodeError(eid, path, f"unreadable step table ({type(exc).__name__}: {exc})") from exc

    def read_frames(self, eid: str, cam: str | None = None) -> np.ndarray:
        """Decoded RGB frames uint8 (T, H, W, 3); checks the count against the step table."""
        meta = self.read_meta(eid)
        cam = cam or meta.cameras[0]
        path = self.video_path(eid, cam)
        try:
            frames = decode_video(path)
        except VideoError as exc:
            raise EpisodeError(eid, path, exc.reason) from exc
        validate_frames(meta, cam, frames, path)
        return frames

    def iter_frame_batches(self, eid: str, cam: str | None = None, batch: int = 32) -> Iterator[np.ndarray]:
        """Stream decoded frames uint8 (b, H, W, 3); raises EpisodeError if the count disagrees with the table."""
        meta = self.read_meta(eid)
        cam = cam or meta.cameras[0]
        path = self.video_path(eid, cam)
        n = 0
        try:
            for chunk in iter_video_frames(path, batch=batch):
                n += len(chunk)
                if n > meta.num_frames:
                    raise EpisodeError(eid, path, f"video has more frames than the {meta.num_frames} table rows")
                yield chunk
        except VideoError as exc:
            raise EpisodeError(eid, path, exc.reason) from exc
        if n != meta.num_frames:
            raise EpisodeError(eid, path, f"video has {n} decodable frames but the step table has {meta.num_frames} rows (truncated?)")

    def read_masks(self, eid: str, cam: str | None = None) -> np.ndarray | None:
        meta = self.read_meta(eid)
        if not meta.has_mask:
            return None
        cam = cam or meta.cameras[0]
        path = self.mask_path(eid, cam)
        try:
            with np.load(path) as z:
                mask = np.unpackbits(z["mask_bits"], count=int(np.prod(z["shape"]))).reshape(tuple(z["shape"]))
        except Exception as exc:
            raise EpisodeError(eid, path, f"unreadable mask ({type(exc).__name__}: {exc})") from exc
        if mask.shape != (meta.num_frames, meta.height, meta.width):
            raise EpisodeError(eid, path, f"mask is {mask.shape}, expected {(meta.num_frames, meta.height, meta.width)}")
        return mask.astype(bool)

    def read(self, eid: str) -> Episode:
        meta = self.read_meta(eid)
        steps = self.read_steps(eid)
        validate_steps(meta, steps, self.episode_dir(eid) / "steps.parquet")
        frames = {cam: self.read_frames(eid, cam) for cam in meta.cameras}
        masks = {cam: self.read_masks(eid, cam) for cam in meta.cameras} if meta.has_mask else None
        return Episode(meta=meta, frames=frames, steps=steps, masks=masks)

    def validate(self, eid: str, decode: bool = True) -> None:
        """Full check of a stored episode; ``decode=False`` skips decoding the videos (count from container)."""
        meta = self.read_meta(eid)
        steps = self.read_steps(eid)
        validate_steps(meta, steps, self.episode_dir(eid) / "steps.parquet")
        for cam in meta.cameras:
            path = self.video_path(eid, cam)
            if not path.exists():
                raise EpisodeError(eid, path, f"video of camera {cam!r} is missing")
            if decode:
                for _ in self.iter_frame_batches(eid, cam, batch=64):
                    pass
            if meta.has_mask:
                self.read_masks(eid, cam)

    def video_digest(self, eid: str, cam: str | None = None) -> str:
        """sha256 of the stored mp4 bytes (and mask file when present): the content key of the episode's pixels."""
        meta = self.read_meta(eid)
        cam = cam or meta.cameras[0]
        h = hashlib.sha256()
        paths = [self.video_path(eid, cam)]
        if meta.has_mask:
            paths.append(self.mask_path(eid, cam))
        for p in paths:
            sha256_file(p, h)
        return h.hexdigest()

    def index(self, episode_ids: list[str] | None = None) -> pd.DataFrame:
        """One row per episode: its metadata fields, folder path and size in bytes.

        ``path`` is the episode folder *relative to the store root* (posix), never absolute: the index is a DVC
        output, and a moved data folder or a clone elsewhere must give the same bytes. :meth:`resolve` turns it
        back into a path under this store.
        """
        rows = []
        for eid in episode_ids if episode_ids is not None else self.episode_ids():
            d = dataclasses.asdict(self.read_meta(eid))
            d["extra"] = json.dumps(d["extra"], sort_keys=True)
            d["cameras"] = ",".join(d["cameras"])
            d["path"] = self.episode_dir(eid).relative_to(self.root).as_posix()
            d["bytes"] = sum(p.stat().st_size for p in self.episode_dir(eid).rglob("*") if p.is_file())
            rows.append(d)
        columns = [f.name for f in dataclasses.fields(EpisodeMeta)] + ["path", "bytes"]
        df = pd.DataFrame(rows, columns=columns)
        for col in ("action_dim", "proprio_dim", "seed"):
            df[col] = df[col].astype("Int64")
        df["success"] = df["success"].astype("boolean")
        return df

    # ---- writing -----------------------------------------------------------------------------------
    def write(self, ep: Episode, overwrite: bool = True, crf: int = 15, lossless: bool = False) -> Path:
        """Validate and write an episode atomically; returns its folder.

        Videos: H.264 at ``crf`` (yuv420p), or ``lossless`` (RGB, decoded frames exact: what simulator episodes use,
        so that training frames are the pixels a policy sees in the simulator; imports stay lossy, their sources are).

        An existing episode with the same id is replaced when ``overwrite`` (a re-generation); with
        ``overwrite=False`` an id clash raises EpisodeError ("duplicate episode id").
        """
        meta = ep.meta
        final = self.episode_dir(meta.episode_id)
        validate_episode(ep, final)
        if final.exists() and not overwrite:
            raise EpisodeError(meta.episode_id, final, "duplicate episode id: an episode with this id is already stored")
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_dir(final) as tmp:
            (tmp / "videos").mkdir()
            for cam, frames in ep.frames.items():
                encode_video(np.asarray(frames), tmp / "videos" / f"{cam}.mp4", fps=meta.fps, crf=crf,
                             lossless=lossless)
            if meta.has_mask and ep.masks:
                (tmp / "masks").mkdir()
                for cam, m in ep.masks.items():
                    m = np.asarray(m, dtype=bool)
                    buf = io.BytesIO()
                    np.savez_compressed(buf, mask_bits=np.packbits(m.ravel()), shape=np.asarray(m.shape))
                    (tmp / "masks" / f"{cam}.npz").write_bytes(buf.getvalue())
            steps = ep.steps.copy()
            steps["episode_index"] = meta.episode_index
            pq.write_table(_steps_to_table(steps), tmp / "steps.parquet")
            atomic_write_text(tmp / "meta.json", meta.to_json())
        return final
