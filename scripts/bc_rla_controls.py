"""BC+RLA beside its controls, paired on the same evaluation seeds: why BC+RLA wins or loses against BC.

Trains BC-ResNet and BC+RLA variants with ``stages.bc.train_bc_policy`` on a finished run's data (episodes, DINO
cache, the trained RLA, the all-tasks pixel decoder: run the pipeline first, e.g. ``--env=resolve``), scores each
in the simulator on the same seeds and prints every variant's paired difference to BC with its stratified bootstrap
95 % interval and McNemar p.

    RLA_DATA_ROOT=data/resolve python scripts/bc_rla_controls.py --env resolve --tasks PullCube-v1 \
        --steps 800 --episodes 100 --variants bc bc_rla bc_rla_shuffled bc_rla_untrained

Variants (all with the env's ``actionless_bc`` settings unless named):
  bc                    BC-ResNet
  bc_rla                BC+RLA, z targets from the trained RLA
  bc_rla_w0             BC+RLA with both latent loss weights 0 (must equal BC: the control of the implementation)
  bc_rla_w4             latent loss weights x4
  bc_rla_shuffled       z targets of another episode of the same task (rl.bc_controls.shuffled_z)
  bc_rla_untrained      z targets from an RLA with its weights drawn again (rl.bc_controls.untrained_like)
  bc_rla_no_actionless  no actionless videos: the latent head trains on the labelled frames only
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import pandas as pd

VARIANTS = ("bc", "bc_rla", "bc_rla_w0", "bc_rla_w4", "bc_rla_shuffled", "bc_rla_untrained", "bc_rla_no_actionless")


def _variant_params(name: str, base: dict) -> dict:
    p = copy.deepcopy(base)
    loss = p.setdefault("loss", {})
    if name == "bc_rla_w0":
        loss["latent_l1_weight"] = loss["latent_mse_weight"] = 0.0
    elif name == "bc_rla_w4":
        loss["latent_l1_weight"] = 4 * float(loss.get("latent_l1_weight", 0.05))
        loss["latent_mse_weight"] = 4 * float(loss.get("latent_mse_weight", 0.05))
    elif name == "bc_rla_no_actionless":
        p.setdefault("episodes", {})["max_actionless_per_task"] = 0
        p["episodes"]["extra_demos_as_actionless"] = False
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default=None, help="Kedro env (its catalog and parameters; RLA_DATA_ROOT moves data)")
    ap.add_argument("--project", default=".")
    ap.add_argument("--tasks", nargs="+", default=None, help="train and evaluate on these (default: params tasks)")
    ap.add_argument("--steps", type=int, default=None, help="BC steps for every variant (default: the env's)")
    ap.add_argument("--episodes", type=int, default=None, help="paired episodes per (variant, task)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=None, help="CSV of the episodes (one row per variant, task, seed)")
    a = ap.parse_args(argv)
    if "bc" not in a.variants:
        a.variants = ["bc", *a.variants]

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from rla_pipeline.evaluation.success import paired_difference, paired_outcomes, wilson_interval
    from rla_pipeline.rl.bc_controls import shuffled_z, trained_z, untrained_like
    from rla_pipeline.rl.sim_eval import evaluate_many_in_sim
    from rla_pipeline.stages.bc import ActionlessBCConfig, train_bc_policy
    from rla_pipeline.stages.evaluation import EvaluationConfig, eval_seeds, sim_config

    project = Path(a.project).resolve()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=a.env) as session:
        catalog = session.load_context().catalog
        params = catalog.load("parameters")
        store, index = catalog.load("episodes"), catalog.load("episode_index")
        cache, rla = catalog.load("feature_cache"), catalog.load("rla_model")
        decoder = catalog.load("pixel_decoder_model_all_tasks")
    seed = params["seed"] if a.seed is None else a.seed
    tasks = a.tasks or list(params["tasks"])
    base = copy.deepcopy(params["actionless_bc"])
    if a.steps:
        tr = base.setdefault("trainer", {})
        tr["max_steps"] = a.steps
        tr["warmup_steps"] = min(int(tr.get("warmup_steps", 0)), a.steps)
    ev = copy.deepcopy(params["evaluation"])
    if a.episodes:
        ev["n_episodes"] = a.episodes
    ecfg = EvaluationConfig.from_dict(ev)
    chunk = ActionlessBCConfig.from_dict(base).policy.chunk
    task_of = dict(zip(index["episode_id"], index["task"]))
    ids = [e for e in index["episode_id"] if task_of[e] in tasks]

    policies, train_s = {}, {}
    for name in a.variants:
        p = _variant_params(name, base)
        z_of, model = None, None
        if name != "bc":
            model = rla
            if name == "bc_rla_shuffled":
                z_of = shuffled_z(trained_z(rla, cache, chunk), ids, task_of,
                                  length_of=lambda e: cache.tokens(e).shape[0], seed=seed)
            elif name == "bc_rla_untrained":
                model = untrained_like(rla, seed=seed)
                z_of = trained_z(model, cache, chunk)
        t0 = time.perf_counter()
        policies[name], _ = train_bc_policy(store, index, tasks, p, seed, params.get("device", "auto"),
                                            run_name=f"controls_{name}", cache=cache, rla=model,
                                            pixel_decoder=decoder, evaluation_params=ev, z_of=z_of)
        train_s[name] = time.perf_counter() - t0
        print(f"{name}: trained in {train_s[name]:.0f} s", flush=True)

    scfg = sim_config(ecfg, index, tasks)
    episodes = evaluate_many_in_sim({k: ("image", v) for k, v in policies.items()}, tasks, ecfg.n_episodes,
                                    eval_seeds(ecfg, seed), scfg)
    if a.out:
        episodes.to_csv(a.out, index=False)
    rows = []
    for name in a.variants:
        g = episodes[episodes["policy"] == name]
        k, n = int(g["success"].sum()), len(g)
        lo, hi = wilson_interval(k, n)
        row = {"variant": name, "success": f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})",
               **{t: f"{100 * g.loc[g.task == t, 'success'].mean():.1f}" for t in tasks},
               "train_s": round(train_s[name])}
        if name != "bc":
            d = paired_difference(paired_outcomes(episodes, "bc", name), seed=seed)
            row["minus_bc"] = f"{d['diff']:+.1f} [{d['diff_ci_low']:+.1f}, {d['diff_ci_high']:+.1f}]"
            row["p_mcnemar"] = round(d["p_mcnemar"], 4)
        rows.append(row)
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
