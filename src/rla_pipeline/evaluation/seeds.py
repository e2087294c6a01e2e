"""Mean and spread of result tables over several global seeds (issue 11: one seed is not evidence).

:func:`across_seeds` takes the same table from runs that differ only in ``seed`` and returns, per row key, the mean,
the sample standard deviation and the min/max of every numeric column over the seeds. ``scripts/multi_seed.py`` runs
the model stages and tables once per seed (each in its own data root that shares the ingested episodes and the DINO
cache) and writes these summaries.
"""
from __future__ import annotations

import pandas as pd

# The columns that name a row of each table (the rest that is numeric is averaged); a key a table lacks (e.g.
# ``robot`` in a one-robot run's older table) is left out. Every seed must have one row per key: a key that misses a
# column (say ``robot``, when a table has one row per robot) raises instead of averaging different rows together.
TABLE_KEYS = {
    "wm_prediction_table": ["robot", "model", "horizon"],
    "wm_decoded_table": ["robot", "model", "horizon"],
    "bc_success_table": ["task"],
    "wmrl_success_table": ["task"],
    "rla_metrics": ["split", "h"],
    "rla_generalisation": ["split", "h"],
    "pixel_decoder_metrics": ["split", "method"],
    "imagined_env_calibration": [],
    "speed_table": ["loop"],
    # one row per h (progress at a=1 and Spearman, true z minus shuffled z with the seed's own episode-bootstrap
    # interval and verdict; the verdict text is not averaged). Tables of older runs had one row per (episode, t):
    # PER_SEED_MEAN averages those per seed first and leaves a one-row-per-h table as it is (rows = 1).
    "rla_temporal_progression": ["h"],
}
PER_SEED_MEAN = {"rla_temporal_progression"}


def summarise_seed(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One seed's rows averaged per key (numeric columns; e.g. an older run's per-pair temporal-progression rows ->
    one row per h, with ``rows`` = how many were averaged; a table already one row per key passes unchanged)."""
    keys = [k for k in keys if k in table.columns]
    num = [c for c in table.select_dtypes("number").columns if c not in keys]
    if not keys:
        out = table[num].mean().to_frame().T
        out["rows"] = len(table)
        return out
    g = table.groupby(keys, sort=False)
    out = g[num].mean()
    out["rows"] = g.size()
    return out.reset_index()


def across_seeds(tables: dict[int, pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """{seed: table} -> one row per key with ``<col>_mean``, ``<col>_std`` (ddof 1; NaN for one seed),
    ``<col>_min``, ``<col>_max`` for each numeric column, and ``seeds`` (how many seeds had the row).

    Keys that no table has are dropped; ``keys == []`` (one-row tables) summarises the single row. Raises
    ValueError when a seed has two rows with the same key (the key misses a column that tells them apart)."""
    if not tables:
        raise ValueError("across_seeds needs at least one seed's table")
    long = pd.concat([t.assign(_seed=s) for s, t in tables.items()], ignore_index=True)
    keys = [k for k in keys if k in long.columns]
    dup = long.duplicated(keys + ["_seed"], keep=False)
    if dup.any():
        raise ValueError(f"rows are not unique per seed for keys {keys}: e.g. "
                         f"{long.loc[dup, keys + ['_seed']].head(2).to_dict('records')}; add the column that tells "
                         "them apart to the keys (TABLE_KEYS)")
    num = [c for c in long.select_dtypes("number").columns if c not in keys and c != "_seed"]
    grouped = long.assign(_all=0).groupby(keys or ["_all"], sort=False)
    out = grouped[num].agg(["mean", "std", "min", "max"])
    out.columns = [f"{c}_{stat}" for c, stat in out.columns]
    out["seeds"] = grouped["_seed"].nunique()
    out = out.reset_index()
    return out.drop(columns="_all") if not keys else out
