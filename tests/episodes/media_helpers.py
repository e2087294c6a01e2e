"""Helpers for the episode tests: write real videos with PyAV and LeRobot-style dataset folders."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd


def level_frames(levels, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): frame t is flat grey ``levels[t]`` with a white top-left quadrant (shows rotation)."""
    frames = np.empty((len(levels), height, width, 3), dtype=np.uint8)
    for t, level in enumerate(levels):
        frames[t] = level
        frames[t, : height // 2, : width // 2] = 255
    return frames


def write_video(path, frames: np.ndarray, fps: float = 10, codec: str = "libx264", rotation: int | None = None,
                times: list[float] | None = None) -> Path:
    """Encode ``frames`` into ``path``. ``rotation``: display matrix (CCW degrees); ``times``: per-frame pts (VFR)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "10", "bf": "0"}
        if codec == "libsvtav1":
            stream.options = {"crf": "20", "preset": "12"}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            if times is not None:
                frame.pts = int(round(times[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_levels(frames: np.ndarray) -> np.ndarray:
    """Mean grey level of the bottom-right quadrant of each frame (T,), the part that carries ``levels``."""
    h, w = frames.shape[1:3]
    return frames[:, h // 2 + 2 :, w // 2 + 2 :].mean(axis=(1, 2, 3))


FPS = 10


def _info(version: str, lengths, video_key: str, codec: str, with_actions: bool, v3: bool) -> dict:
    features = {
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        video_key: {
            "dtype": "video", "shape": [48, 64, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": 48, "video.width": 64, "video.codec": codec, "video.pix_fmt": "yuv420p",
                     "video.is_depth_map": False, "video.fps": FPS, "video.channels": 3, "has_audio": False},
        },
    }
    if with_actions:
        features["action"] = {"dtype": "float32", "shape": [3], "names": ["dx", "dy", "grip"]}
    info = {"codebase_version": version, "robot_type": "so100", "total_episodes": len(lengths),
            "total_frames": int(sum(lengths)), "total_tasks": 2, "chunks_size": 1000, "fps": FPS,
            "splits": {"train": f"0:{len(lengths)}"}, "features": features}
    if v3:
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        info["data_files_size_in_mb"], info["video_files_size_in_mb"] = 100, 500
    else:
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    return info


TASKS = ["Push the cube to the goal", "Pull the cube back"]


def episode_levels(lengths) -> list[list[int]]:
    """Distinct grey level per frame over the whole dataset: episode e, frame f -> 10 + 12 * global index."""
    out, k = [], 0
    for n in lengths:
        out.append([10 + 12 * (k + f) for f in range(n)])
        k += n
    return out


def _rows(e: int, n: int, start: int, with_actions: bool, nan_action: bool = False) -> pd.DataFrame:
    d = {
        "timestamp": (np.arange(n) / FPS).astype(np.float32),
        "frame_index": np.arange(n, dtype=np.int64),
        "episode_index": np.full(n, e, dtype=np.int64),
        "index": np.arange(start, start + n, dtype=np.int64),
        "task_index": np.full(n, e % 2, dtype=np.int64),
        "observation.state": [np.array([e, f], np.float32) for f in range(n)],
    }
    if with_actions:
        acts = [np.array([e, f, 0.5], np.float32) for f in range(n)]
        if nan_action:
            acts[1] = np.array([np.nan, 0, 0], np.float32)
        d["action"] = acts
    return pd.DataFrame(d)


def make_lerobot_v3(root, lengths=(6, 5), codec: str = "libx264", with_actions: bool = True,
                    video_key: str = "observation.images.front", nan_action_episode: int | None = None) -> Path:
    """A LeRobot v3.0 folder: every episode in ONE parquet and ONE mp4 (concatenated), like LeRobot writes."""
    root = Path(root)
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    info = _info("v3.0", lengths, video_key, "av1" if codec == "libsvtav1" else "h264", with_actions, v3=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(TASKS, name="task")).to_parquet(root / "meta" / "tasks.parquet")
    levels = episode_levels(lengths)
    all_levels = [v for lv in levels for v in lv]
    write_video(root / "videos" / video_key / "chunk-000" / "file-000.mp4", level_frames(all_levels), fps=FPS, codec=codec)
    tables, eps, start = [], [], 0
    for e, n in enumerate(lengths):
        tables.append(_rows(e, n, start, with_actions, nan_action=e == nan_action_episode))
        eps.append({
            "episode_index": e, "tasks": [TASKS[e % 2]], "length": n,
            "data/chunk_index": 0, "data/file_index": 0,
            "dataset_from_index": start, "dataset_to_index": start + n,
            f"videos/{video_key}/chunk_index": 0, f"videos/{video_key}/file_index": 0,
            f"videos/{video_key}/from_timestamp": start / FPS, f"videos/{video_key}/to_timestamp": (start + n) / FPS,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
        })
        start += n
    pd.concat(tables, ignore_index=True).to_parquet(root / "data" / "chunk-000" / "file-000.parquet", index=False)
    pd.DataFrame(eps).to_parquet(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet", index=False)
    return root


def make_lerobot_v21(root, lengths=(4, 5), codec: str = "libx264", with_actions: bool = True,
                     video_key: str = "observation.images.front") -> Path:
    """A LeRobot v2.1 folder: one parquet and one mp4 per episode, jsonl metadata."""
    root = Path(root)
    (root / "meta").mkdir(parents=True)
    info = _info("v2.1", lengths, video_key, "h264", with_actions, v3=False)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "tasks.jsonl").write_text("\n".join(json.dumps({"task_index": i, "task": t}) for i, t in enumerate(TASKS)))
    (root / "meta" / "episodes.jsonl").write_text(
        "\n".join(json.dumps({"episode_index": e, "tasks": [TASKS[e % 2]], "length": n}) for e, n in enumerate(lengths))
    )
    start = 0
    for e, (n, lv) in enumerate(zip(lengths, episode_levels(lengths))):
        path = root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        _rows(e, n, start, with_actions).to_parquet(path, index=False)
        write_video(root / "videos" / "chunk-000" / video_key / f"episode_{e:06d}.mp4", level_frames(lv), fps=FPS, codec=codec)
        start += n
    return root
