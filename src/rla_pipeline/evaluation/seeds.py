"""Mean and spread of result tables over several global seeds (issue 11: one seed is not evidence).

:func:`across_seeds` takes the same table from runs that differ only in ``seed`` and returns, per row key, the mean,
the sample standard deviation and the min/max of every numeric column over the seeds. ``scripts/multi_seed.py`` runs
the model stages and tables once per seed (each in its own data root that shares the ingested episodes and the DINO
cache) and writes these summaries.
"""
from __future__ import annotations

import pandas as pd

# the columns that name a row of each table (the rest that is numeric is averaged)
TABLE_KEYS = {
    "wm_prediction_table": ["model", "horizon"],
    "bc_success_table": ["task"],
    "wmrl_success_table": ["task"],
    "rla_metrics": ["split", "h"],
    "rla_generalisation": ["split", "h"],
}


def across_seeds(tables: dict[int, pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """{seed: table} -> one row per key with ``<col>_mean``, ``<col>_std`` (ddof 1; NaN for one seed),
    ``<col>_min``, ``<col>_max`` for each numeric column, and ``seeds`` (how many seeds had the row)."""
    if not tables:
        raise ValueError("across_seeds needs at least one seed's table")
    long = pd.concat([t.assign(_seed=s) for s, t in tables.items()], ignore_index=True)
    num = [c for c in long.select_dtypes("number").columns if c not in keys and c != "_seed"]
    g = long.groupby(keys, sort=False)
    out = g[num].agg(["mean", "std", "min", "max"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out["seeds"] = g["_seed"].nunique()
    return out.reset_index()
