"""Which conditioning predicts better: the world models trained on commanded actions vs on joint-position chunks,
same data, same budget, same seed, then the prediction table (with its episode-level bootstrap intervals).

    python scripts/compare_conditioning.py DATA_ROOT [--steps 150] [--models rla_wm,deterministic,absolute_flow]
        [--conf conf] [--env ENV] [--out table.md]

DATA_ROOT: a data root after `kedro run --pipelines=ingestion,features,rla` (feature cache, splits, index and
rla_model). The world-model parameters are conf/base's (plus ``--env``'s) with ``trainer.max_steps = --steps`` and
``budget: same_steps`` (every model the same steps); RLA-WM, the direct deterministic baseline and absolute flow are
trained per conditioning, then evaluated by ``stages.world_model.evaluate_world_models``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import yaml


def _params(conf: Path, env: str | None, name: str) -> dict:
    from omegaconf import OmegaConf

    layers = [yaml.safe_load((conf / "base" / f"parameters_{name}.yml").read_text())[name]]
    if env and (conf / env / f"parameters_{name}.yml").exists():
        layers.append(yaml.safe_load((conf / env / f"parameters_{name}.yml").read_text()).get(name) or {})
    return OmegaConf.to_container(OmegaConf.merge(*layers))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--conf", default="conf")
    ap.add_argument("--env", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--models", default="rla_wm,deterministic,absolute_flow",
                    help="comma-separated subset of rla_wm, deterministic, absolute_flow (rla_wm always runs)")
    a = ap.parse_args()

    from rla_pipeline.features.cache import FeatureCache
    from rla_pipeline.stages import world_model as wm
    from rla_pipeline.training.model_io import load_model

    root = Path(a.data_root)
    cache = FeatureCache(root / "04_feature" / "dino_cache")
    splits = pd.read_parquet(root / "05_model_input" / "episode_splits.parquet")
    index = pd.read_parquet(root / "02_intermediate" / "episode_index.parquet")
    rla = load_model(root / "06_models" / "rla.safetensors")
    base = _params(Path(a.conf), a.env, "world_model")
    base["trainer"] = {**base["trainer"], "max_steps": a.steps, "val_every": a.steps, "checkpoint_every": a.steps,
                       "progress": False}
    base["budget"] = "same_steps"
    tables = []
    for cond in ("actions", "joint_positions"):
        p = {**base, "conditioning": cond}
        t0 = time.perf_counter()
        r = wm.train_rla_world_model(rla, cache, splits, index, p, "cpu", None, a.seed)
        d = (wm.train_deterministic_baseline(cache, splits, index, p, "cpu", None, a.seed)
             if "deterministic" in a.models.split(",") else None)
        f = (wm.train_absolute_flow_baseline(cache, splits, index, p, "cpu", None, a.seed)
             if "absolute_flow" in a.models.split(",") else None)
        table, _, _ = wm.evaluate_world_models(r, d, f, cache, splits, index, p, a.seed)
        tables.append(table.assign(conditioning=cond))
        print(f"{cond}: trained and evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    out = pd.concat(tables, ignore_index=True)
    cols = ["conditioning", "model", "horizon", "pairs", "token_l1", "vs_copy", "vs_copy_ci_low", "vs_copy_ci_high"]
    text = out[[c for c in cols if c in out]].to_markdown(index=False, floatfmt=".3f")
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
        out.to_parquet(Path(a.out).with_suffix(".parquet"))


if __name__ == "__main__":
    main()
