"""Where the time goes (issue 12, item 7): one run on this machine, four markdown tables.

(a) every trainer at the small default sizes (conf/base): samples/s through training.trainer.train, and the matmul
    FLOPs of one step (torch.utils.flop_counter: matmuls, convolutions, attention; elementwise ops not counted) per
    second as a share of the fp32 matmul peak measured at the start of the same run;
(b) RLA training samples/s with tokens read from the feature cache against decoding the frames from the episode's
    mp4 and encoding them with the frozen DINO encoder inside every batch (what DINO-WM does);
(c) imagined env steps/s (RLA-WM, all envs in one batched call) against the real ManiSkill simulator (render; render
    + DINO encode of every frame), in simulator-step equivalents (one imagined chunk-step = chunk frames per env);
(d) wall time per node of the latest `wmrl` run in the MLflow tracking store (``node_seconds.*`` metrics of
    MlflowRunHook), or a line saying there is none.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench_throughput.py           # make bench (about 10-15 min here)
    .venv/bin/python scripts/bench_throughput.py --quick                     # checks the script (~3 min)

The measurements are rla_pipeline.bench.throughput (its trainers are the GPU smoke run's stages,
rla_pipeline.bench.smoke). Data: synthetic episodes (128 px, the default ingestion size) encoded with the default encoder
(vit_small_patch14_dinov2 @ 84 px, RANDOM weights: speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def base_params() -> dict:
    """The conf/base parameters (every parameters*.yml, as they stand: no interpolation there)."""
    import yaml

    out = {}
    for f in sorted((ROOT / "conf" / "base").glob("parameters*.yml")):
        out.update(yaml.safe_load(f.read_text()) or {})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps and small data: checks that the script works")
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps per trainer (default 30, quick 4)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--tracking-uri", default=None, help="MLflow store for (d) (default: the project's, as kedro run)")
    ap.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    ap.add_argument("--skip-sim", action="store_true", help="(c) without the ManiSkill simulator")
    args = ap.parse_args(argv)
    args.steps = args.steps or (4 if args.quick else 30)
    from rla_pipeline.bench.throughput import run
    from rla_pipeline.hooks import tracking_uri

    return run(base_params(), args.quick, args.steps, args.threads, args.tracking_uri or tracking_uri(),
               json_path=args.json, skip_sim=args.skip_sim)


if __name__ == "__main__":
    sys.exit(main())
