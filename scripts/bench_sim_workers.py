"""Wall-clock of simulated ingestion and image-policy evaluation with 1 vs 2 simulator workers (sim/parallel.py).

    python scripts/bench_sim_workers.py [--task PullCube-v1] [--demos 10] [--episodes 4] [--size 128]

Times include starting the worker processes (spawn: each imports torch and ManiSkill). Results go to stdout as a
Markdown table (docs/simulation.md "Simulator workers")."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="PullCube-v1")
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()

    import torch

    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig, simulate_episodes
    from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy
    from rla_pipeline.rl.sim_eval import SimEvalConfig, evaluate_many_in_sim
    from rla_pipeline.sim.vulkan import ensure_vulkan

    ensure_vulkan()
    rows = []
    for w in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            cfg = SimulationConfig(tasks=[args.task], image_size=args.size, demos_per_task=args.demos,
                                   play_per_task=0, actionless_per_task=0, workers=w)
            t0 = time.perf_counter()
            out = simulate_episodes(cfg, "demo", EpisodeStore(Path(d)), progress=False)
            rows.append(("ingestion", w, time.perf_counter() - t0, f"{int(out['kept'].sum())} demos, "
                         f"{len(out)} attempts, {int(out[out['kept']]['num_frames'].sum())} frames kept"))
    torch.manual_seed(0)
    policies = {n: ("image", BCResNetPolicy(BCResNetConfig(image_size=64, action_dim=4, chunk=8, hidden=32,
                                                           num_tasks=1, task_names=[args.task])))
                for n in ("bc", "bc_rla")}
    for w in (1, 2):
        t0 = time.perf_counter()
        df = evaluate_many_in_sim(policies, [args.task], args.episodes, list(range(10_000, 10_000 + args.episodes)),
                                  SimEvalConfig(image_size=args.size, workers=w))
        rows.append(("evaluation", w, time.perf_counter() - t0, f"{len(df)} episodes, {int(df['steps'].sum())} steps"))
    print("| stage | workers | seconds | speed-up | work |\n|---|---|---|---|---|")
    base = {}
    for stage, w, s, what in rows:
        base.setdefault(stage, s)
        print(f"| {stage} | {w} | {s:.1f} | {base[stage] / s:.2f}x | {what} |")


if __name__ == "__main__":
    main()
