"""Behaviour-cloning settings side by side on one set of episodes: train BC-ResNet (the project's
``stages.bc.train_bc_policy``) under each setting and score it in the real simulator on the same seeds.

Reads the episodes a run already made (``<data>/01_raw/episodes`` and its index), so it costs only training and
evaluation. Each setting is a name and a JSON dict merged into ``actionless_bc`` (``conf/base`` values otherwise,
but ``decoded_copies`` off: the sweep has no pixel decoder; BC is scored on rendered frames either way);
``execute`` is taken out of it and used as ``evaluation.sim.execute_steps``.

    python scripts/bc_sweep.py --data data --tasks PullCube-v1 PokeCube-v1 --episodes 20 \
        --setting 'base={}' --setting 'long={"trainer": {"max_steps": 800}, "execute": 4}'

Prints one row per (setting, task): success with a Wilson 95 % interval, the val action MSE against the per-task
mean-chunk predictor, and the training seconds; writes the rows to ``--out`` (CSV) when given.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import pandas as pd


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data")
    ap.add_argument("--tasks", nargs="+", default=None, help="train on these tasks (default: every task in conf)")
    ap.add_argument("--eval-tasks", nargs="+", default=None, help="evaluate on these (default: --tasks)")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--setting", action="append", required=True, help="name=JSON overrides of actionless_bc")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    import yaml

    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.evaluation.success import wilson_interval
    from rla_pipeline.stages.bc import train_bc_policy
    from rla_pipeline.stages.evaluation import EvaluationConfig, eval_seeds, sim_config
    from rla_pipeline.rl.sim_eval import evaluate_many_in_sim

    conf = Path(__file__).resolve().parents[1] / "conf" / "base"
    base_bc = yaml.safe_load((conf / "parameters_actionless_bc.yml").read_text())["actionless_bc"]
    base_bc["decoded_copies"] = False
    base_eval = yaml.safe_load((conf / "parameters_evaluation.yml").read_text())["evaluation"]
    tasks = a.tasks or yaml.safe_load((conf / "parameters.yml").read_text())["tasks"]
    eval_tasks = a.eval_tasks or tasks
    root = Path(a.data)
    store = EpisodeStore(root / "01_raw" / "episodes")
    index = pd.read_parquet(root / "02_intermediate" / "episode_index.parquet")
    rows = []
    for spec in a.setting:
        name, _, js = spec.partition("=")
        over = json.loads(js or "{}")
        execute = over.pop("execute", None)
        params = _merge(base_bc, over)
        t0 = time.perf_counter()
        policy, hist = train_bc_policy(store, index, tasks, params, a.seed, "cpu", run_name=f"sweep_{name}")
        train_s = time.perf_counter() - t0
        check = hist[hist["split"] == "mean_chunk_check"]
        ecfg = EvaluationConfig.from_dict(_merge(base_eval, {"n_episodes": a.episodes,
                                                             "sim": {"execute_steps": execute, "workers": a.workers}}))
        scfg = sim_config(ecfg, index, eval_tasks)
        t0 = time.perf_counter()
        ep = evaluate_many_in_sim({"bc": ("image", policy)}, eval_tasks, a.episodes, eval_seeds(ecfg, a.seed), scfg)
        eval_s = time.perf_counter() - t0
        for task, g in ep.groupby("task", sort=False):
            k, n = int(g["success"].sum()), len(g)
            lo, hi = wilson_interval(k, n)
            rows.append({"setting": name, "task": task, "success": f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})",
                         "mean_steps": float(g["steps"].mean()),
                         "val_mse_ratio": float(check["val_action_mse_ratio"].iloc[0]) if len(check) else float("nan"),
                         "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "execute": execute,
                         "overrides": json.dumps(over)})
        print(pd.DataFrame(rows).to_string(index=False), flush=True)
    if a.out:
        pd.DataFrame(rows).to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
