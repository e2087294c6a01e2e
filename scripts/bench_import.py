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
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from rla_pipeline.episodes.synthetic import write_lerobot_v3


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
