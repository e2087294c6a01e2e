"""Success rates with 95% Wilson intervals, and the two paper-shaped tables (Table 2: BC vs BC+RLA, Table 3: BC vs WMRL).

Input everywhere is the per-episode frame written by :func:`rla_pipeline.rl.sim_eval.evaluate_in_sim`
(columns ``policy, task, seed, success, steps, seconds``). Output tables are long-to-wide: one row per task plus an
``average`` row, one ``<policy>_sr`` column (percent) with ``<policy>_ci_low/high`` beside it, the paper's own number
in a column whose name says it is a reference from different robots and scale, and a ``verdict`` that states plainly
whether the method beat the baseline on our numbers.
"""
from __future__ import annotations

import math

import pandas as pd

PAPER_LABEL = "paper (reference, different robots/scale)"

# rla-method.md, Table 2 (success rate %, per ManiSkill task of the release; their robots differ from ours).
PAPER_TABLE2 = {
    "BC-ResNet": {"PushT": 3.6, "RollBall": 42.0, "PullCube": 33.6, "PullCubeTool": 7.6, "PokeCube": 49.2, "average": 27.2},
    "+RLA": {"PushT": 15.2, "RollBall": 43.8, "PullCube": 43.6, "PullCubeTool": 12.0, "PokeCube": 63.6, "average": 35.6},
}
# rla-method.md, Table 3 (XArm PokeCube, UR10e RollBall, UR10e PushT).
PAPER_TABLE3 = {
    "BC-ResNet": {"PokeCube": 89.9, "RollBall": 65.5, "PushT": 17.2},
    "WMRL": {"PokeCube": 95.9, "RollBall": 73.1, "PushT": 20.7},
}


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion; returns (low, high) in [0, 1]; (0, 1) when n == 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _paper_key(task: str) -> str:
    """ManiSkill id ("PullCube-v1") -> the paper's column name ("PullCube")."""
    return task.split("-v")[0]


def success_rates(episodes: pd.DataFrame) -> pd.DataFrame:
    """Per (policy, task): n, successes, success rate and 95% Wilson interval (all rates in percent)."""
    need = {"policy", "task", "success"}
    missing = need - set(episodes.columns)
    if missing:
        raise ValueError(f"episode table lacks columns {sorted(missing)}")
    rows = []
    for (policy, task), g in episodes.groupby(["policy", "task"], sort=False):
        n, k = len(g), int(g["success"].astype(bool).sum())
        lo, hi = wilson_interval(k, n)
        rows.append({"policy": policy, "task": task, "n": n, "successes": k, "sr": 100.0 * k / max(n, 1),
                     "ci_low": 100.0 * lo, "ci_high": 100.0 * hi})
    return pd.DataFrame(rows)


def comparison_table(
    episodes: pd.DataFrame,
    baseline: str,
    method: str,
    paper: dict[str, dict[str, float]],
    paper_names: tuple[str, str],
) -> pd.DataFrame:
    """Wide table: one row per task (+ ``average``), our rates with CIs, the paper's numbers, and a verdict column.

    The average row pools every episode of a policy (its interval is the Wilson interval of the pooled counts).
    ``verdict`` per row: "<method> better" only when its interval lies wholly above the baseline's, "<method> worse"
    when wholly below, else "no clear difference" — with a handful of episodes most rows honestly say the latter.
    """
    rates = success_rates(episodes[episodes["policy"].isin([baseline, method])])
    tasks = list(dict.fromkeys(episodes["task"]))
    rows = []
    for task in [*tasks, "average"]:
        row: dict[str, object] = {"task": task}
        stats = {}
        for pol in (baseline, method):
            if task == "average":
                g = episodes[episodes["policy"] == pol]
                n, k = len(g), int(g["success"].astype(bool).sum())
                lo, hi = wilson_interval(k, n)
                s = {"n": n, "sr": 100.0 * k / max(n, 1), "ci_low": 100 * lo, "ci_high": 100 * hi}
            else:
                r = rates[(rates["policy"] == pol) & (rates["task"] == task)]
                s = r.iloc[0].to_dict() if len(r) else {"n": 0, "sr": float("nan"), "ci_low": 0.0, "ci_high": 100.0}
            stats[pol] = s
            row[f"{pol}_n"] = int(s["n"])
            row[f"{pol}_sr"] = float(s["sr"])
            row[f"{pol}_ci_low"] = float(s["ci_low"])
            row[f"{pol}_ci_high"] = float(s["ci_high"])
        key = "average" if task == "average" else _paper_key(task)
        for pol, name in zip((baseline, method), paper_names):
            row[f"{PAPER_LABEL}: {name}"] = paper.get(name, {}).get(key, float("nan"))
        b, m = stats[baseline], stats[method]
        if m["ci_low"] > b["ci_high"]:
            row["verdict"] = f"{method} better"
        elif m["ci_high"] < b["ci_low"]:
            row["verdict"] = f"{method} worse"
        else:
            row["verdict"] = "no clear difference"
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_line(table: pd.DataFrame, baseline: str, method: str) -> str:
    """One plain sentence about the ``average`` row: did ``method`` beat ``baseline`` on our numbers?"""
    avg = table[table["task"] == "average"].iloc[0]
    b, m = avg[f"{baseline}_sr"], avg[f"{method}_sr"]
    if avg["verdict"] == f"{method} better":
        return f"Verdict: {method} beats {baseline} on average ({m:.1f}% vs {b:.1f}%, 95% intervals do not overlap)."
    if m > b:
        return (f"Verdict: {method} does NOT clearly beat {baseline}: {m:.1f}% vs {b:.1f}% on average, "
                "but the 95% intervals overlap (too few episodes to tell).")
    if m == b:
        return f"Verdict: {method} does NOT beat {baseline}: both {m:.1f}% on average."
    return f"Verdict: {method} does NOT beat {baseline}: {m:.1f}% vs {b:.1f}% on average."


def table_markdown(table: pd.DataFrame, baseline: str, method: str, title: str, note: str = "") -> str:
    """Markdown with our rates as ``sr [low, high] (n)``, the paper's reference numbers, and the verdict line."""
    paper_cols = [c for c in table.columns if c.startswith(PAPER_LABEL)]
    header = ["task", f"{baseline} (ours)", f"{method} (ours)", *paper_cols, "verdict"]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [str(r["task"])]
        for pol in (baseline, method):
            cells.append(f"{r[f'{pol}_sr']:.1f} [{r[f'{pol}_ci_low']:.1f}, {r[f'{pol}_ci_high']:.1f}] (n={int(r[f'{pol}_n'])})")
        for c in paper_cols:
            v = r[c]
            cells.append("—" if pd.isna(v) else f"{v:.1f}")
        cells.append(str(r["verdict"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Success rate in percent with 95% Wilson interval and episode count. "
              f"Columns marked '{PAPER_LABEL}' are the paper's numbers, not ours: other robots, tasks variants and "
              "scale, shown only for orientation.", "", verdict_line(table, baseline, method)]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def speed_markdown(speed: pd.DataFrame) -> str:
    """Markdown of the speed table (one row per measured loop)."""
    cols = list(speed.columns)
    lines = ["## Imagined vs real environment speed (same machine)", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for _, r in speed.iterrows():
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.tolist()) + " |")
    return "\n".join(lines) + "\n"
