"""Run the model stages and the tables once per global seed, then summarise mean and spread over the seeds.

    python scripts/multi_seed.py --seeds 0 1 2 [--env test] [--pipelines rla world_model pixel_decoder actionless_bc rl evaluation]

Each seed runs in its own data root ``<data>/seeds/seed_<s>`` (RLA_DATA_ROOT) whose 01-04 folders (episodes,
episode index, DINO cache) are links to the shared ones, so only the models and tables differ; run ingestion and
features once first (``make run PIPELINE=features``), or after a whole ``make run`` (seed 0) pass
``--default-run-is-seed 0`` so that run's tables count as seed 0 instead of running it again.
``--params seed=<s>`` reaches every trainer, sample and evaluation seed. Summaries (``across_seeds``: mean, std, min, max per row) go to ``<data>/seeds/summary_<table>.csv``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from rla_pipeline.evaluation.seeds import PER_SEED_MEAN, TABLE_KEYS, across_seeds, summarise_seed

SHARED = ("01_raw", "02_intermediate", "03_primary", "04_feature")
# the model stages of the wmrl chain in its order (pixel_decoder: WMRL's BC-ResNet acts on its decoded RGB)
DEFAULT_PIPELINES = ("rla", "world_model", "pixel_decoder", "actionless_bc", "rl", "evaluation")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--env", default=None)
    ap.add_argument("--pipelines", nargs="+", default=list(DEFAULT_PIPELINES))
    ap.add_argument("--data-root", default=os.environ.get("RLA_DATA_ROOT", "data"))
    ap.add_argument("--summarise-only", action="store_true")
    ap.add_argument("--default-run-is-seed", type=int, default=None, metavar="S",
                    help="the finished default run in <data> (make run: seed S, same code and parameters) counts as "
                         "seed S: its tables are read from <data>/08_reporting and S is not run again")
    a = ap.parse_args(argv)
    data = Path(a.data_root).resolve()
    kedro = str(Path(sys.executable).with_name("kedro"))

    def reporting(s: int) -> Path:
        return data / "08_reporting" if s == a.default_run_is_seed else data / "seeds" / f"seed_{s}" / "08_reporting"

    for s in a.seeds:
        if s == a.default_run_is_seed:
            continue
        root = data / "seeds" / f"seed_{s}"
        root.mkdir(parents=True, exist_ok=True)
        for name in SHARED:
            link = root / name
            if (data / name).exists() and not link.exists():
                link.symlink_to(data / name, target_is_directory=True)
        if a.summarise_only:
            continue
        for p in a.pipelines:
            cmd = [kedro, "run", f"--pipelines={p}", f"--params=seed={s}"] + ([f"--env={a.env}"] if a.env else [])
            print("+", " ".join(cmd), f"(RLA_DATA_ROOT={root})", flush=True)
            subprocess.run(cmd, check=True, env={**os.environ, "RLA_DATA_ROOT": str(root)})
    for table, keys in TABLE_KEYS.items():
        found = {s: pd.read_parquet(f) for s in a.seeds if (f := reporting(s) / f"{table}.parquet").exists()}
        if table in PER_SEED_MEAN:
            found = {s: summarise_seed(t, keys) for s, t in found.items()}
        if found:
            out = data / "seeds" / f"summary_{table}.csv"
            out.parent.mkdir(parents=True, exist_ok=True)
            across_seeds(found, keys).to_csv(out, index=False)
            print(f"{table}: {len(found)} seeds -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
