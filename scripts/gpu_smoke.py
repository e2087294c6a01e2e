"""GPU smoke run (issue 12, item 4): every paper-scale stage for a few steps on this machine's accelerator.

Stages (rla_pipeline.bench.smoke), each through the project's own code (no copies of it):
  features       two synthetic episodes -> FeatureCache.update with the paper's encoder (DINOv3 ViT-L/16 at 512 px,
                 RANDOM weights: labelled as such, there is no hub access; a weights file can be given)
  train.*        a few optimisation steps of every trainer at paper width (conf/paper) with bf16 autocast, through
                 training.trainer.train: RLA, RLA-WM, the two world-model baselines, BC-ResNet, BC+RLA, token BC,
                 the pixel decoder (tokens -> RGB UNet half)
  ppo            one imagined PPO iteration (rl.ppo.train_ppo in rl.imagined_env.ImaginedVectorEnv over RLA-WM)
  ddp            the RLA trainer with TrainerConfig.num_processes = all visible GPUs (NCCL; gloo and 2 processes on
                 the CPU), i.e. training.distributed.launch_local (torchrun's engine); with ONE visible GPU the
                 trainer does not start a process group, so a 1-rank NCCL group + DDP wrapper is run directly
Prints a table: stage, status, step time (median over the steps after the first), peak memory, detail.
A failing stage is reported (status FAIL + the error) and the others still run; the exit code is 1 if any failed.

    python scripts/gpu_smoke.py                       # CUDA, paper widths (make gpu-smoke)
    python scripts/gpu_smoke.py --device cpu --tiny   # the same code at tiny sizes on the CPU (tests/scripts)
    python scripts/gpu_smoke.py --json out.json       # also write the rows as JSON

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per stage (the DDP row: rank 0's device); on the CPU the
process's peak RSS so far (ru_maxrss, monotonic; the DDP row: rank 0's worker process).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONF = ROOT / "conf" / "paper"


def paper_params() -> dict:
    """The parameters of ``--env=paper`` as Kedro resolves them: conf/base soft-merged with conf/paper (which holds
    only what differs from base, so reading conf/paper alone misses keys)."""
    from kedro.config import OmegaConfigLoader

    from rla_pipeline.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(str(PAPER_CONF.parent), env="paper", **CONFIG_LOADER_ARGS)["parameters"]


def sizes(tiny: bool, batch_size: int | None, weights: str):
    from rla_pipeline.bench.smoke import paper_sizes, tiny_sizes

    return tiny_sizes(batch_size) if tiny else paper_sizes(paper_params(), batch_size, weights)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) | cuda:N | cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (for checking the script on a CPU)")
    ap.add_argument("--steps", type=int, default=5, help="optimisation steps per trainer (>= 2 for a step time)")
    ap.add_argument("--batch-size", type=int, default=None, help="global batch per trainer (paper mode default 16)")
    ap.add_argument("--weights", default="random",
                    help="encoder weights at paper scale: random (default, labelled) | /path/to/model.safetensors")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames per synthetic episode (paper mode 40; more pairs for paper batch sizes)")
    ap.add_argument("--json", default=None, help="also write the table rows to this JSON file")
    ap.add_argument("--ddp-single", action="store_true",
                    help="the one-device DDP path (what a 1-GPU machine runs) instead of the trainer's 2-process one")
    ap.add_argument("--stages", default=None,
                    help="comma-separated subset, e.g. ddp or train.rla,train.rla_wm (features always run; stages "
                         "that need an earlier one's model fail without it)")
    args = ap.parse_args(argv)
    stages = None if args.stages is None else set(args.stages.split(","))
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_smoke: CUDA is not available here; use --device cpu --tiny to check the script", file=sys.stderr)
        return 2
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    from rla_pipeline.bench.smoke import Smoke

    sz = sizes(args.tiny, args.batch_size, args.weights)
    if args.frames:
        sz.frames = args.frames
    tmp = Path(tempfile.mkdtemp(prefix="gpu_smoke_"))
    smoke = Smoke(sz, args.device, args.steps, tmp, ddp_single=args.ddp_single)
    try:
        print(f"[smoke] device {smoke.device}, {sz.labels['scale']}, tmp {tmp}", file=sys.stderr)
        smoke.run(stages)
        return smoke.report(args.json)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # paper scale: ~0.3 GB of episodes and tokens


if __name__ == "__main__":
    sys.exit(main())
