"""Decoding of foreign videos for the importers: upright, resized, with their real presentation times.

What real tools write and how it is handled here:

- Phones store portrait video as landscape pixels plus a display matrix (rotation side data). FFmpeg does not
  rotate on decode, so each frame is rotated by ``frame.rotation`` (counter-clockwise degrees, PyAV) to stand upright.
- Phones record at a variable frame rate: times come from each frame's ``pts`` (``frame.time``), never from
  ``index / fps``.
- Any size (odd, not a multiple of 16): frames are resized so the *shorter* side equals ``image_size`` (aspect
  kept, FFmpeg's area filter when shrinking, bicubic when growing) and then centre-cropped to
  ``image_size x image_size``. Non-square pixels (sample aspect ratio) are ignored.
- Codecs: whatever the FFmpeg inside PyAV decodes (H.264, HEVC, AV1 via libdav1d, VP9, ...).

Every failure raises :class:`~rla_pipeline.episodes.video.VideoError` naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rla_pipeline.episodes.video import VideoError


@dataclass
class DecodedVideo:
    """Frames of one video, upright and resized."""

    frames: np.ndarray  # uint8 (T, S, S, 3)
    times: np.ndarray  # float64 (T,) presentation time of each frame in seconds (container clock)
    codec: str
    rotation: int  # display rotation applied (counter-clockwise degrees)
    source_size: tuple[int, int]  # (height, width) of the stored pixels, before rotation
    source_fps: float  # container's average rate (0.0 when unknown)


def _quarter_turns(rotation: float | int | None) -> int:
    """Counter-clockwise display rotation in degrees -> number of np.rot90 quarter turns (0..3)."""
    if not rotation:
        return 0
    return int(round(float(rotation) / 90.0)) % 4


def upright_square(frame, image_size: int | None, rotation: float | int | None = None) -> np.ndarray:
    """One ``av.VideoFrame`` -> uint8 (S, S, 3): rotated upright, shorter side to ``S``, centre-cropped.

    ``image_size`` None keeps the native (rotated) size without cropping.
    """
    turns = _quarter_turns(frame.rotation if rotation is None else rotation)
    w_s, h_s = frame.width, frame.height
    if image_size is None:
        img = frame.to_ndarray(format="rgb24")
        return np.ascontiguousarray(np.rot90(img, k=turns)) if turns else img
    # upright size, then the scaled upright size whose shorter side is image_size
    uw, uh = (h_s, w_s) if turns % 2 else (w_s, h_s)
    scale = image_size / min(uw, uh)
    tw, th = max(image_size, round(uw * scale)), max(image_size, round(uh * scale))
    # resize in stored orientation (cheaper: FFmpeg's swscale), rotate the small image afterwards
    sw, sh = (th, tw) if turns % 2 else (tw, th)
    interp = "AREA" if scale < 1.0 else "BICUBIC"
    img = frame.reformat(width=sw, height=sh, format="rgb24", interpolation=interp).to_ndarray()
    if turns:
        img = np.rot90(img, k=turns)
    y0, x0 = (img.shape[0] - image_size) // 2, (img.shape[1] - image_size) // 2
    return np.ascontiguousarray(img[y0 : y0 + image_size, x0 : x0 + image_size])


def _open(path: Path):
    import av

    if not path.exists():
        raise VideoError(path, "file does not exist")
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise VideoError(path, f"cannot open video ({type(exc).__name__}: {exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream")
    return container


def decode_upright(path: str | os.PathLike, image_size: int | None, max_frames: int | None = None) -> DecodedVideo:
    """Decode every frame of ``path`` upright and resized (see the module docstring).

    Raises VideoError when the file cannot be opened or decoded, holds no frame, or holds fewer frames than its
    container index promises (a truncated file).
    """
    path = Path(path)
    container = _open(path)
    frames: list[np.ndarray] = []
    times: list[float] = []
    rotation = 0
    try:
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            expected = int(stream.frames or 0)
            codec = stream.codec_context.name
            source_size = (stream.codec_context.height, stream.codec_context.width)
            source_fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            for frame in container.decode(stream):
                if not frames:
                    rotation = int(round(frame.rotation or 0))
                frames.append(upright_square(frame, image_size, rotation))
                t = frame.time
                times.append(float(t) if t is not None else (times[-1] + 1.0 / (source_fps or 30.0) if times else 0.0))
                if max_frames is not None and len(frames) >= max_frames:
                    expected = 0
                    break
    except VideoError:
        raise
    except Exception as exc:  # av.error.InvalidDataError, EOFError, ...
        raise VideoError(path, f"cannot decode video ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise VideoError(path, "video holds no decodable frame (empty or truncated)")
    if expected and len(frames) < expected:
        raise VideoError(path, f"truncated video: decoded {len(frames)} of the {expected} frames its index lists")
    order = np.argsort(np.asarray(times), kind="stable")  # decode order is presentation order, but be safe
    return DecodedVideo(
        frames=np.stack(frames)[order],
        times=np.asarray(times, dtype=np.float64)[order],
        codec=codec,
        rotation=rotation,
        source_size=source_size,
        source_fps=source_fps,
    )


def resample_times(times: np.ndarray, target_fps: float) -> np.ndarray:
    """Indices of the frames to keep so that a (variable-rate) clip plays at ``target_fps``.

    Grid ``t_k = t_0 + k / target_fps`` up to the last frame; each grid point takes the frame whose pts is nearest
    (phone clips jitter around their nominal rate). A source slower than the target is not upsampled: duplicates
    are dropped, so every source frame appears at most once and the kept frames keep their real times.
    """
    times = np.asarray(times, dtype=np.float64)
    if len(times) == 0:
        return np.zeros(0, dtype=np.int64)
    grid = times[0] + np.arange(int(np.floor((times[-1] - times[0]) * target_fps + 1e-6)) + 1) / target_fps
    right = np.clip(np.searchsorted(times, grid), 1, len(times) - 1) if len(times) > 1 else np.zeros(len(grid), int)
    left = np.maximum(right - 1, 0)
    idx = np.where(np.abs(times[right] - grid) < np.abs(times[left] - grid), right, left)
    return np.unique(idx)


def decode_at_times(
    path: str | os.PathLike,
    query_times: np.ndarray,
    image_size: int | None,
    tolerance_s: float,
) -> np.ndarray:
    """Frames of ``path`` whose presentation times match ``query_times`` (seconds), uint8 (T, S, S, 3).

    For files holding many episodes back to back (LeRobot v3): seeks to the key frame before the first query
    time and decodes only up to the last one. Each query takes the nearest decoded frame; a query farther than
    ``tolerance_s`` from every frame raises VideoError (missing frames, wrong timestamps, truncated file).
    """
    path = Path(path)
    query_times = np.asarray(query_times, dtype=np.float64)
    if len(query_times) == 0:
        raise VideoError(path, "no frame times asked for")
    t_lo, t_hi = float(query_times.min()), float(query_times.max())
    container = _open(path)
    frames: list[np.ndarray] = []
    times: list[float] = []
    try:
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if t_lo > 0 and stream.time_base:
                container.seek(int(max(0.0, t_lo - tolerance_s) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    continue
                if t < t_lo - tolerance_s:
                    continue
                if t > t_hi + tolerance_s:
                    break
                frames.append(upright_square(frame, image_size))
                times.append(float(t))
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(path, f"cannot decode video ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise VideoError(path, f"no frame between {t_lo:.3f}s and {t_hi:.3f}s (truncated or wrong timestamps?)")
    have = np.asarray(times)
    nearest = np.abs(have[None, :] - query_times[:, None]).argmin(axis=1)
    err = np.abs(have[nearest] - query_times)
    if (err > tolerance_s).any():
        bad = int(np.argmax(err > tolerance_s))
        raise VideoError(
            path,
            f"no frame within {tolerance_s:.4f}s of t={query_times[bad]:.4f}s (closest {have[nearest[bad]]:.4f}s; "
            f"{int((err > tolerance_s).sum())} of {len(query_times)} frames missing: truncated video?)",
        )
    return np.stack([frames[i] for i in nearest])
