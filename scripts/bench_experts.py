"""Success rate and cost of the scripted experts, measured in the real simulator.

    nice -n 10 python scripts/bench_experts.py --seeds 20 [--tasks PushT-v1 RollBall-v1] [--image-size 128]

For every task: ``attempts`` rollouts from seeds ``--seed-start ..`` (the demo seed range of ``make run``), each
at most the task's step limit of ``SimulationConfig`` (``steps_for``, raised to the expert's
``EXPERT_MAX_STEPS`` where that is longer, e.g. PushT 300; ``--max-steps N`` overrides both), rendered like the
demos (RGB + mask at ``--image-size``). Prints a markdown table: task, robot, attempts, successes, rate, mean
steps to success, seconds per attempt and per kept demo (simulation only, no video encoding). ``--out`` also
writes it to a file; every attempt's success step goes to stderr as it finishes.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> None:
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig, rollout
    from rla_pipeline.sim.envs import SimEnvConfig, make_env
    from rla_pipeline.sim.experts import EXPERT_MAX_STEPS, expert_tasks, make_expert

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(expert_tasks()))
    ap.add_argument("--seeds", type=int, default=20, help="attempts per task")
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--no-mask", action="store_true")
    ap.add_argument("--out", default=None, help="also write the table here")
    ap.add_argument("--experimental", action="store_true", help="also allow experts below their bar")
    ap.add_argument("--max-steps", type=int, default=None, help="step limit for every task (default: see above)")
    args = ap.parse_args()

    base = SimulationConfig(tasks=args.tasks)
    limits = {t: args.max_steps or max(base.steps_for(t), EXPERT_MAX_STEPS.get(t, 0)) for t in args.tasks}
    sim = SimulationConfig(tasks=args.tasks, task_max_steps=limits)
    lines = ["| task | robot | attempts | successes | rate | steps to success (mean) | s/attempt | s/demo |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for task in args.tasks:
        limit = sim.steps_for(task)
        env = make_env(SimEnvConfig(task=task, image_size=args.image_size, with_mask=not args.no_mask,
                                    max_episode_steps=limit))
        steps, t0 = [], time.perf_counter()
        seeds = range(args.seed_start, args.seed_start + args.seeds)
        try:
            for seed in seeds:
                ro = rollout(env, make_expert(task, experimental=args.experimental), seed, limit, 0)
                if ro.success_step is not None:
                    steps.append(ro.success_step)
                # per attempt on stderr: a long run that is cut short still says what it measured
                print(f"{task} seed {seed}: success step {ro.success_step}", file=sys.stderr, flush=True)
        finally:
            robot = env.robot
            env.close()
        wall = time.perf_counter() - t0
        n, k = len(seeds), len(steps)
        per_demo = f"{wall / k:.1f}" if k else "-"
        mean_steps = f"{np.mean(steps):.0f} (limit {limit})" if k else f"- (limit {limit})"
        line = f"| {task} | {robot} | {n} | {k} | {k / n:.0%} | {mean_steps} | {wall / n:.1f} | {per_demo} |"
        lines.append(line)
        print(line, flush=True)
    if args.out:
        from pathlib import Path

        from rla_pipeline.utils.atomic import atomic_write_text

        atomic_write_text(Path(args.out), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
