"""Import (and optionally encode) a generated LeRobot v3.0 dataset of a few thousand episodes: is memory flat, and
does an interrupted import resume without redoing finished episodes?

    python scripts/bench_import.py                      # 2000 episodes x 8 frames of 16 px, import only
    python scripts/bench_import.py --episodes 3000 --encode

Steps: (1) write the dataset (``write_lerobot_v3``: LeRobot's v3.0 layout, many episodes per parquet/mp4 file);
(2) import it in a child process and kill that process (SIGKILL, no clean-up) once half the episodes are in the
store; (3) import again in this process (the resume), sampling peak RSS at 10%/50%/100% of the episodes left, and count
the episodes the resume wrote again although the killed run had finished them (must be 0: the importer skips an
episode whose recipe digest is already in the store; a half-written one never reached its final folder, see
``utils/atomic.py``); (4) with ``--encode``: encode every episode with a random-init DINO (feature cache) the same
way, killed half-way and resumed. Prints one Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

FPS = 10


def write_lerobot_v3(root, n_episodes: int, frames: int = 8, action_dim: int = 3, robot: str = "bench_arm",
                     episodes_per_file: int = 100, size: int = 16, tasks=("pick the cube", "push the cube"),
                     seed: int = 0) -> Path:
    """A LeRobot v3.0 dataset folder as LeRobot writes it: ``episodes_per_file`` episodes back to back in each
    data parquet and each mp4 (h264 here; LeRobot defaults to AV1), ``meta/episodes`` rows pointing into them with
    ``from_timestamp``; ``action`` of width ``action_dim`` and a 2-d ``observation.state``. Frames are a moving
    bright square on a grey level per episode, so neighbouring frames differ."""
    import av

    root = Path(root)
    rng = np.random.default_rng(seed)
    key = "observation.images.front"
    for d in ("meta/episodes/chunk-000", "data/chunk-000", f"videos/{key}/chunk-000"):
        (root / d).mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": "v3.0", "robot_type": robot, "total_episodes": n_episodes,
        "total_frames": n_episodes * frames, "total_tasks": len(tasks), "chunks_size": 1000, "fps": FPS,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "timestamp": {"dtype": "float32", "shape": [1]}, "frame_index": {"dtype": "int64", "shape": [1]},
            "episode_index": {"dtype": "int64", "shape": [1]}, "index": {"dtype": "int64", "shape": [1]},
            "task_index": {"dtype": "int64", "shape": [1]},
            "observation.state": {"dtype": "float32", "shape": [2]},
            "action": {"dtype": "float32", "shape": [action_dim]},
            key: {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"]},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    pd.DataFrame({"task_index": list(range(len(tasks)))}, index=pd.Index(list(tasks), name="task")).to_parquet(
        root / "meta" / "tasks.parquet")
    eps, index = [], 0
    for f, first in enumerate(range(0, n_episodes, episodes_per_file)):
        ids = range(first, min(first + episodes_per_file, n_episodes))
        tables = []
        with av.open(str(root / "videos" / key / "chunk-000" / f"file-{f:03d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(FPS))
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "bf": "0"}
            start_in_file = 0
            for e in ids:
                level = int(rng.integers(30, 200))
                pos = rng.integers(0, size // 2, size=2)
                acts = rng.normal(size=(frames, action_dim)).astype(np.float32)
                for t in range(frames):
                    img = np.full((size, size, 3), level, np.uint8)
                    y, x = (pos + t) % (size - 4)
                    img[y:y + 4, x:x + 4] = 255
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                tables.append(pd.DataFrame({
                    "timestamp": (np.arange(frames) / FPS).astype(np.float32),
                    "frame_index": np.arange(frames, dtype=np.int64),
                    "episode_index": np.full(frames, e, np.int64),
                    "index": np.arange(index, index + frames, dtype=np.int64),
                    "task_index": np.full(frames, e % len(tasks), np.int64),
                    "observation.state": [np.array([e, t], np.float32) for t in range(frames)],
                    "action": list(acts),
                }))
                eps.append({
                    "episode_index": e, "tasks": [tasks[e % len(tasks)]], "length": frames,
                    "data/chunk_index": 0, "data/file_index": f,
                    "dataset_from_index": index, "dataset_to_index": index + frames,
                    f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": f,
                    f"videos/{key}/from_timestamp": start_in_file / FPS,
                    f"videos/{key}/to_timestamp": (start_in_file + frames) / FPS,
                    "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                })
                index += frames
                start_in_file += frames
            for packet in stream.encode():
                container.mux(packet)
        pd.concat(tables, ignore_index=True).to_parquet(root / "data" / "chunk-000" / f"file-{f:03d}.parquet",
                                                        index=False)
    pd.DataFrame(eps).to_parquet(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet", index=False)
    return root


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _import(dataset: Path, store_root: Path, progress=None) -> pd.DataFrame:
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.sources.lerobot import import_lerobot

    return import_lerobot({"path": str(dataset), "image_size": 16}, EpisodeStore(store_root), progress=progress)


def _encoder():
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    return DinoEncoder(EncoderConfig(weights="random", image_size=56, device="cpu", batch_size=64))


def _encode(store_root: Path, cache_root: Path) -> pd.DataFrame:
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig

    return FeatureCache(cache_root).update(EpisodeStore(store_root), _encoder(), cfg=FeatureCacheConfig(progress=False))


class Watch:
    """Samples ``count()`` in a thread while a resume runs: wall and peak RSS of this process when 10/50/100 % of
    the resume's own work (the episodes the killed run left) are done."""

    def __init__(self, total: int, count, t0: float):
        import threading

        self.total, self.count, self.t0, self.at = total, count, t0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.2)

    def _sample(self) -> None:
        n = self.count()
        for q in (0.1, 0.5, 1.0):
            if q not in self.at and n >= self.total * q:
                self.at[q] = (time.perf_counter() - self.t0, peak_rss_mib())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _child(args) -> None:
    """The run that gets killed: import (or encode) everything, as a plain user run would."""
    if args.child == "import":
        _import(Path(args.dataset), Path(args.store))
    else:
        _encode(Path(args.store), Path(args.cache))


def _kill_half_way(args, what: str, count, total: int) -> int:
    """Start the child run of ``what``; SIGKILL it once ``count()`` reaches half of ``total``; -> count then."""
    cmd = [sys.executable, __file__, "--child", what, "--dataset", str(args.dataset), "--store", str(args.store),
           "--cache", str(args.cache)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    while proc.poll() is None and count() < total // 2:
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return count()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--episodes-per-file", type=int, default=100)
    ap.add_argument("--work", default="data/bench_import", help="folder for the dataset, store and cache")
    ap.add_argument("--encode", action="store_true", help="also encode (feature cache), killed and resumed too")
    ap.add_argument("--child", choices=["import", "encode"], help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)

    work = Path(args.work)
    args.dataset, args.store, args.cache = work / "lerobot", work / "episodes", work / "cache"
    if not (args.dataset / "meta" / "info.json").exists():
        t = time.perf_counter()
        write_lerobot_v3(args.dataset, args.episodes, args.frames, episodes_per_file=args.episodes_per_file)
        print(f"wrote {args.episodes} episodes in {time.perf_counter() - t:.0f} s to {args.dataset}", flush=True)
    n = args.episodes
    rows = []

    def stored() -> int:
        return sum(1 for p in args.store.glob("*/meta.json")) if args.store.exists() else 0

    done_before = _kill_half_way(args, "import", stored, n)
    finished = {p.parent.name for p in args.store.glob("*/meta.json")}
    t0 = time.perf_counter()
    with Watch(n - done_before, lambda: stored() - done_before, t0) as ms:
        out = _import(args.dataset, args.store)
    redone = int(out[out["episode_id"].isin(finished) & (out["status"] == "written")].shape[0])
    rows.append(("import", n, done_before, ms, redone, int((out["status"] == "written").sum())))

    if args.encode:
        from rla_pipeline.features.cache import FeatureCache

        def entries() -> int:
            return sum(1 for _ in (args.cache / "entries").glob("*.safetensors")) if args.cache.exists() else 0

        done_enc = _kill_half_way(args, "encode", entries, n)
        mtimes = {p.name: p.stat().st_mtime_ns for p in (args.cache / "entries").glob("*.safetensors")}
        t0 = time.perf_counter()
        with Watch(n - done_enc, lambda: entries() - done_enc, t0) as ms_e:
            _encode(args.store, args.cache)
        rewritten = sum(1 for k, t in mtimes.items() if (args.cache / "entries" / k).stat().st_mtime_ns != t)
        new = entries() - len(mtimes)
        rows.append(("encode", n, done_enc, ms_e, rewritten, new))

    print("\n| step | episodes | done when killed | resume wall s at 10% / 50% / 100% of the rest | peak RSS MiB (10% / 50% / "
          "100%) | finished episodes redone on resume | episodes done by the resume |")
    print("|---|---|---|---|---|---|---|")
    for step, total, before, m, redone, did in rows:
        walls = " / ".join(f"{m.at[q][0]:.1f}" if q in m.at else "-" for q in (0.1, 0.5, 1.0))
        rss = " / ".join(f"{m.at[q][1]:.0f}" if q in m.at else "-" for q in (0.1, 0.5, 1.0))
        print(f"| {step} | {total} | {before} | {walls} | {rss} | {redone} | {did} |")


if __name__ == "__main__":
    main()
