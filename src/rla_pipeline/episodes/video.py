"""Video encode/decode with PyAV (FFmpeg): H.264 on write, anything FFmpeg decodes on read.

Every decode error is raised as :class:`VideoError` naming the file, so callers can turn it into an
``EpisodeError`` that names the episode too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from rla_pipeline.utils.atomic import atomic_path


class VideoError(RuntimeError):
    """A video could not be opened or decoded (missing, corrupt, truncated, no video stream)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def encode_video(
    frames: np.ndarray,
    path: str | os.PathLike,
    fps: float,
    codec: str = "libx264",
    crf: int = 15,
    preset: str = "medium",
    lossless: bool = False,
) -> Path:
    """Write ``frames`` uint8 (T, H, W, 3) as an mp4 at ``path`` (atomically).

    H.264 with yuv420p needs even sizes; odd sizes fall back to yuv444p (still decodable by FFmpeg).
    ``lossless``: H.264 in RGB at crf 0 (x264's ``libx264rgb``; decoded frames equal ``frames`` bit for bit, about
    2.5x the bytes of crf 15 yuv420p). Simulator episodes are stored so: at 64-128 px, yuv420p's chroma
    subsampling changed a frame by ~4 grey levels on average, four times what one simulator step changes, so
    policies trained on decoded frames met different pixels in the simulator (docs/simulation.md).
    x264 is deterministic: the same frames give the same bytes.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError(f"{path}: no frames to encode")
    t, h, w, _ = frames.shape
    pix_fmt = "yuv420p" if (h % 2 == 0 and w % 2 == 0) else "yuv444p"
    if lossless:
        codec, pix_fmt, crf = "libx264rgb", "rgb24", 0
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            from fractions import Fraction

            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            if codec in ("libx264", "libx264rgb"):
                stream.options = {"crf": str(crf), "preset": preset}
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def iter_video_frames(path: str | os.PathLike, batch: int = 32) -> Iterator[np.ndarray]:
    """Yield uint8 (b, H, W, 3) batches of decoded RGB frames, in order, without holding the whole video."""
    import av

    path = Path(path)
    if not path.exists():
        raise VideoError(path, "file does not exist")
    buf: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                buf.append(frame.to_ndarray(format="rgb24"))
                if len(buf) >= batch:
                    yield np.stack(buf)
                    buf = []
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(path, f"cannot decode video ({type(exc).__name__}: {exc})") from exc
    if buf:
        yield np.stack(buf)


def decode_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of ``path`` as uint8 (T, H, W, 3)."""
    batches = list(iter_video_frames(path, batch=256))
    if not batches:
        raise VideoError(path, "video holds no decodable frame")
    return np.concatenate(batches, axis=0)
