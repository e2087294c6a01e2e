"""Benchmark of the features stage (not a test): prints one markdown table measured on this machine.

Rows: end-to-end cache fill (decode + encode + write) frames/s, a naive loop (one frame at a time, no batching,
no overlap), bare model forward frames/s at the best batch, re-run on a full cache (seconds, ratio to the first run),
peak RSS of a cache fill + one pass over TokenPairDataset for two episode counts (memory must not grow with them).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_features.py            # small default, random weights
    .venv/bin/python scripts/bench_features.py --model vit_small_patch16_dinov3.lvd1689m --image-size 96
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _store(root: Path, episodes: int, frames: int, size: int):
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.synthetic import synthetic_episode

    store = EpisodeStore(root)
    for i in range(episodes):
        eid = f"bench-{i:04d}"
        if eid not in store:
            store.write(synthetic_episode(eid, num_frames=frames, size=size, seed=i))
    return store


def _encoder(args, **kw):
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    return DinoEncoder(EncoderConfig(model_name=args.model, image_size=args.image_size, weights="random",
                                     device="cpu", batch_size=args.batch_size, **kw))


def _rss_child(args) -> None:
    """Fill a fresh cache for ``--episodes`` episodes, read every sample once, print peak RSS (MiB) as JSON."""
    import torch

    from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig
    from rla_pipeline.features.samples import SampleConfig, TokenPairDataset

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(args.store_root), args.episodes, args.frames, args.size)
        cache = FeatureCache(Path(tmp) / "cache")
        cache.update(store, _encoder(args), store.episode_ids()[: args.episodes], FeatureCacheConfig(progress=False))
        ds = TokenPairDataset(cache, None, cache.episode_ids(), SampleConfig(h_min=1, h_max=8))
        for i in range(len(ds)):
            ds[i]
    print(json.dumps({"episodes": args.episodes, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_small_patch14_dinov2.lvd142m")
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=96, help="frame size of the synthetic episodes (px)")
    ap.add_argument("--naive-episodes", type=int, default=2)
    ap.add_argument("--rss-episodes", type=int, nargs=2, default=[4, 16])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--store-root", default=None)
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return _rss_child(args)

    import numpy as np
    import torch

    from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig
    from rla_pipeline.features.entry_file import serialize_tokens

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_features_"))
    store_root = Path(args.store_root) if args.store_root else tmp / "episodes"
    t = time.perf_counter()
    store = _store(store_root, max(args.episodes, *args.rss_episodes), args.frames, args.size)
    ids = store.episode_ids()[: args.episodes]
    print(f"# made {len(store.episode_ids())} synthetic episodes in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    enc = _encoder(args)
    rows: list[tuple[str, str]] = []

    # bare forward at the best batch size (preprocessed input, no decode, no write)
    best = (0.0, 0)
    for bs in sorted({8, 32, args.batch_size}):
        x = torch.randint(0, 255, (bs, args.size, args.size, 3), dtype=torch.uint8).numpy()
        enc.encode_batch(x)  # warm-up
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 3.0:
            enc.encode_batch(x)
            n += bs
        best = max(best, (n / (time.perf_counter() - t), bs))
    rows.append((f"bare model forward, best batch ({best[1]})", f"{best[0]:.1f} frames/s"))

    # naive: decode a whole episode, then one frame per forward pass, then write
    naive_ids = ids[: args.naive_episodes]
    t = time.perf_counter()
    frames_n = 0
    for eid in naive_ids:
        frames, masks = store.read_frames(eid), store.read_masks(eid)
        toks = np.stack([enc.encode_batch(frames[i : i + 1], masks[i : i + 1])[0].numpy() for i in range(len(frames))])
        (tmp / f"naive-{eid}.safetensors").write_bytes(serialize_tokens(toks, {"episode_id": eid}))
        frames_n += len(frames)
    naive_fps = frames_n / (time.perf_counter() - t)
    rows.append(("naive loop (1 frame per forward, no overlap)", f"{naive_fps:.1f} frames/s"))

    # end to end: FeatureCache.update on an empty cache
    cache = FeatureCache(tmp / "cache")
    cfg = FeatureCacheConfig(progress=False)
    t = time.perf_counter()
    cache.update(store, enc, ids, cfg)
    first = time.perf_counter() - t
    total = len(ids) * args.frames
    e2e = total / first
    rows.append((f"end to end (decode + encode + write), {len(ids)} episodes x {args.frames} frames",
                 f"{e2e:.1f} frames/s ({100 * e2e / best[0]:.0f}% of bare forward)"))
    t = time.perf_counter()
    calls = enc.calls
    cache.update(store, enc, ids, cfg)
    rerun = time.perf_counter() - t
    assert enc.calls == calls
    rows.append(("re-run on the full cache (checksums verified)", f"{rerun:.3f} s ({first / rerun:.0f}x faster than {first:.1f} s)"))

    for n in args.rss_episodes:
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", "--episodes", str(n), "--store-root", str(store_root),
             "--model", args.model, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
             "--frames", str(args.frames), "--size", str(args.size), "--threads", str(args.threads)],
            check=True, capture_output=True, text=True,
        )
        rss = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]
        rows.append((f"peak RSS, fill + read all samples, {n} episodes ({n * args.frames} frames)", f"{rss:.0f} MiB"))

    print(f"\n{args.model} @ {args.image_size}px ({enc.num_tokens} tokens x {enc.token_dim}), random weights, "
          f"batch {args.batch_size}, torch threads {args.threads}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, frames {args.size}px\n")
    print("| measurement | value |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
