"""Success rates with 95% Wilson intervals, paired comparisons, and the two paper-shaped tables (Table 2: BC vs
BC+RLA, Table 3: BC vs WMRL, with the decoding gap beside it: :func:`decoding_gap_columns`).

Input everywhere is the per-episode frame written by :func:`rla_pipeline.rl.sim_eval.evaluate_in_sim`
(columns ``policy, task, seed, success, steps, seconds``). Output tables are long-to-wide: one row per task plus an
``average`` row, one ``<policy>_sr`` column (percent) with ``<policy>_ci_low/high`` beside it, the paper's own number
in a column whose name says it is a reference from different robots and scale, and a ``verdict`` that states plainly
whether the method beat the baseline on our numbers.

Both policies of a table run the SAME evaluation seeds, so the comparison is paired: per task, episodes are matched by
seed; the verdict uses the exact McNemar test on the discordant pairs, and the difference (method - baseline, points)
comes with a paired bootstrap 95% interval (pairs resampled within each task; the average row resamples every task's
pairs at once). Two overlapping Wilson intervals say far less than this: they ignore that a seed which is hard for one
policy is usually hard for the other.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rla_pipeline.evaluation.intervals import MIN_BOOTSTRAP_UNITS, interval_cell, no_interval_reason

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
# The robots of the paper's columns (rla-method.md: Table 2's "Tasks and robots" line, Table 3's column headers).
# Ours are ManiSkill 3's stock robots (``sim.envs.TASK_ROBOTS``): the numbers are not comparable one to one.
PAPER_TABLE2_ROBOTS = {"PushT": "UR10e + stick", "RollBall": "UR10e + stick", "PullCube": "Panda",
                       "PullCubeTool": "Panda", "PokeCube": "xArm6 + Robotiq"}
PAPER_TABLE3_ROBOTS = {"PokeCube": "XArm", "RollBall": "UR10e", "PushT": "UR10e"}
#: The paper's task lists, in its column order: Table 2 (BC vs BC+RLA) and Table 3 (BC vs WMRL).
PAPER_TABLE2_TASKS = ("PushT-v1", "RollBall-v1", "PullCube-v1", "PullCubeTool-v1", "PokeCube-v1")
PAPER_TABLE3_TASKS = ("PokeCube-v1", "RollBall-v1", "PushT-v1")


def paper_column(table: str, row: str) -> str:
    """Name of the column holding the paper's ``row`` of ``table`` (e.g. "Table 2", "+RLA") as a reference."""
    prefix = f"{PAPER_LABEL}: " if not table else f"{PAPER_LABEL}: {table}, row "
    return f"{prefix}{row}"


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


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: ``b`` pairs where only the baseline succeeded,
    ``c`` where only the method did (binomial test of min(b, c) against Bin(b + c, 1/2)); 1.0 when b + c == 0."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_outcomes(episodes: pd.DataFrame, baseline: str, method: str) -> pd.DataFrame:
    """One row per (task, seed) both policies ran: columns task, seed, base (bool), meth (bool).

    Raises when a policy ran a seed the other did not (an unpaired table cannot be compared this way)."""
    need = {"policy", "task", "seed", "success"}
    if need - set(episodes.columns):
        raise ValueError(f"episode table lacks columns {sorted(need - set(episodes.columns))}")
    cols = ["task", "seed", "success"]
    b = episodes.loc[episodes["policy"] == baseline, cols].rename(columns={"success": "base"})
    m = episodes.loc[episodes["policy"] == method, cols].rename(columns={"success": "meth"})
    pairs = b.merge(m, on=["task", "seed"], how="outer", sort=False)
    if pairs[["base", "meth"]].isna().any().any():
        bad = pairs[pairs[["base", "meth"]].isna().any(axis=1)][["task", "seed"]].head(3).values.tolist()
        raise ValueError(f"{baseline} and {method} did not run the same evaluation seeds, e.g. {bad}")
    return pairs.assign(base=pairs["base"].astype(bool), meth=pairs["meth"].astype(bool))


def paired_difference(pairs: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Method - baseline success rate (points) over paired outcomes with a paired bootstrap 95% interval and the exact
    McNemar p-value. Resampling is stratified by task (each task keeps its own number of pairs), so the average row
    weighs tasks as the data does and no task can vanish from a resample. When no task has two pairs every resample
    is the data itself: the bounds are NaN (no interval), not a zero-width one."""
    n = len(pairs)
    if n == 0:
        return {"pairs": 0, "diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
                "only_baseline": 0, "only_method": 0, "p_mcnemar": 1.0}
    d = pairs["meth"].to_numpy(int) - pairs["base"].to_numpy(int)  # +1, 0, -1 per pair
    rng = np.random.default_rng(seed)
    sums = np.zeros(n_boot)
    strata = pairs.groupby("task", sort=False).indices
    for _, idx in strata.items():
        dd = d[idx]
        sums += dd[rng.integers(0, len(dd), size=(n_boot, len(dd)))].sum(1)
    boot = 100.0 * sums / n
    resampled = max(len(idx) for idx in strata.values()) >= MIN_BOOTSTRAP_UNITS
    lo, hi = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))) if resampled else (math.nan, math.nan)
    b, c = int((d < 0).sum()), int((d > 0).sum())
    return {"pairs": n, "diff": 100.0 * float(d.mean()), "diff_ci_low": lo, "diff_ci_high": hi,
            "only_baseline": b, "only_method": c, "p_mcnemar": mcnemar_exact(b, c)}


def episodes_to_resolve(p_baseline: float, p_method: float, discordance: float | None = None, alpha: float = 0.05,
                        power: float = 0.8) -> int:
    """Paired episodes per cell for a McNemar test at level ``alpha`` to detect p_method - p_baseline with ``power``
    (Connor 1987's normal approximation). ``discordance``: the share of seeds where the two policies disagree; None =
    the independent-outcomes value p_b (1 - p_m) + p_m (1 - p_b), the cautious choice when nothing is known."""
    from statistics import NormalDist

    delta = abs(p_method - p_baseline)
    if delta == 0:
        raise ValueError("a zero difference cannot be resolved")
    psi = discordance if discordance is not None else p_baseline * (1 - p_method) + p_method * (1 - p_baseline)
    if not delta <= psi <= 1:
        raise ValueError(f"discordance {psi} must lie in [|difference| = {delta}, 1]")
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    n = (za * math.sqrt(psi) + zb * math.sqrt(psi - delta ** 2)) ** 2 / delta ** 2
    return int(math.ceil(n))


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
    n_boot: int = 2000,
    seed: int = 0,
    paper_table: str = "",
    robots: dict[str, str] | None = None,
    paper_robots: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Wide table: one row per task (+ ``average``), our rates with CIs, the paired difference with its interval, the
    paper's numbers, and a verdict column.

    The average row pools every episode of a policy (its interval is the Wilson interval of the pooled counts).
    Paired columns (episodes matched by seed, see the module docstring): ``diff`` (method - baseline, points),
    ``diff_ci_low/high`` (paired bootstrap 95%), ``only_baseline`` / ``only_method`` (discordant pairs) and
    ``p_mcnemar``. ``verdict`` per row: "<method> better" / "<method> worse" only when the exact McNemar test rejects
    equality at 5%, else "no clear difference" — with a handful of episodes most rows honestly say the latter.

    The paper's numbers go to columns named by :func:`paper_column` (``paper_table``, e.g. "Table 2", names the
    table; the paper's rows are ``paper_names``). ``robots`` (ManiSkill task id -> our robot) and ``paper_robots``
    (paper column name, e.g. "PushT" -> its robot) add ``robot (ours)`` / ``robot (paper)`` columns when given.
    """
    rates = success_rates(episodes[episodes["policy"].isin([baseline, method])])
    tasks = list(dict.fromkeys(episodes["task"]))
    pairs = paired_outcomes(episodes, baseline, method)
    rows = []
    for task in [*tasks, "average"]:
        row: dict[str, object] = {"task": task}
        key = "average" if task == "average" else _paper_key(task)
        if robots is not None:
            row["robot (ours)"] = "" if task == "average" else robots.get(task, "?")
        if paper_robots is not None:
            row["robot (paper)"] = "" if task == "average" else paper_robots.get(key, "not in the paper")
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
        for pol, name in zip((baseline, method), paper_names):
            row[paper_column(paper_table, name)] = paper.get(name, {}).get(key, float("nan"))
        diff = paired_difference(pairs if task == "average" else pairs[pairs["task"] == task], n_boot, seed)
        row.update(diff)
        if diff["p_mcnemar"] < 0.05 and diff["diff"] > 0:
            row["verdict"] = f"{method} better"
        elif diff["p_mcnemar"] < 0.05 and diff["diff"] < 0:
            row["verdict"] = f"{method} worse"
        else:
            row["verdict"] = "no clear difference"
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_line(table: pd.DataFrame, baseline: str, method: str) -> str:
    """One plain sentence about the ``average`` row: did ``method`` beat ``baseline`` on our numbers?"""
    avg = table[table["task"] == "average"].iloc[0]
    b, m = avg[f"{baseline}_sr"], avg[f"{method}_sr"]
    if pd.isna(avg["diff_ci_low"]) or pd.isna(avg["diff_ci_high"]):
        reason = _no_diff_interval(avg).removeprefix("n/a").strip(" ()")
        interval = "no paired 95% interval" + (f" ({reason})" if reason else "")
    else:
        interval = f"paired 95% interval [{avg['diff_ci_low']:+.1f}, {avg['diff_ci_high']:+.1f}]"
    d = f"difference {avg['diff']:+.1f} points, {interval}, McNemar p = {avg['p_mcnemar']:.3g}"
    if avg["verdict"] == f"{method} better":
        return f"Verdict: {method} beats {baseline} on average ({m:.1f}% vs {b:.1f}%; {d})."
    if avg["verdict"] == f"{method} worse":
        return f"Verdict: {method} is worse than {baseline} on average ({m:.1f}% vs {b:.1f}%; {d})."
    if m == b == 0:
        return (f"Verdict: cannot tell whether {method} beats {baseline}: neither succeeds ({d}); episodes where "
                f"both fail say nothing about a difference.")
    why = "there is no paired interval" if "no paired" in interval else "the paired interval does not exclude 0"
    return (f"Verdict: cannot tell whether {method} beats {baseline}: {m:.1f}% vs {b:.1f}% on average, and "
            f"{why} ({d}).")


def _no_diff_interval(row) -> str:
    """Why a row's paired difference has no interval: one episode (seed) in all, or at most one per task."""
    n = row.get("pairs", math.nan)
    if pd.isna(n) or int(n) < MIN_BOOTSTRAP_UNITS:
        return no_interval_reason(n)
    return "n/a (1 episode per task)"


def table_markdown(table: pd.DataFrame, baseline: str, method: str, title: str, note: str = "") -> str:
    """Markdown with our rates as ``sr [low, high] (n)``, the paper's reference numbers, and the verdict line."""
    paper_cols = [c for c in table.columns if c.startswith(PAPER_LABEL)]
    robot_cols = [c for c in ("robot (ours)", "robot (paper)") if c in table.columns]
    header = ["task", *robot_cols, f"{baseline} (ours)", f"{method} (ours)", f"{method} - {baseline} [paired 95%]", "McNemar p",
              *paper_cols, "verdict"]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [str(r["task"]), *(str(r[c]) for c in robot_cols)]
        for pol in (baseline, method):
            cells.append(f"{r[f'{pol}_sr']:.1f} [{r[f'{pol}_ci_low']:.1f}, {r[f'{pol}_ci_high']:.1f}] (n={int(r[f'{pol}_n'])})")
        cells.append(interval_cell(r["diff"], r["diff_ci_low"], r["diff_ci_high"], digits=1, signed=True,
                                   reason=_no_diff_interval(r)))
        cells.append(f"{r['p_mcnemar']:.3g}")
        for c in paper_cols:
            v = r[c]
            cells.append("—" if pd.isna(v) else f"{v:.1f}")
        cells.append(str(r["verdict"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Success rate in percent with 95% Wilson interval and episode count. Both policies ran the same "
              "evaluation seeds: the difference is paired (bootstrap over seeds, stratified by task) and the verdict "
              "is the exact McNemar test at 5%. "
              f"Columns marked '{PAPER_LABEL}' are the paper's numbers (the named table and row), not ours: other "
              "robots, task variants and scale, shown only for orientation."
              + (" 'robot (ours)' is ManiSkill 3's stock robot we ran; 'robot (paper)' the one behind the paper's "
                 "number." if robot_cols else ""), "", verdict_line(table, baseline, method)]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# Table 3 is read only when WMRL's BC-ResNet acts on decoded frames about as it does on rendered ones: a mean action
# difference above a third of the actions' own size says it does not (docs/rl.md, "The domain gap").
DECODING_GAP_LIMIT = 1.0 / 3.0
DECODING_GAP_FLAG = "WMRL's policy cannot read decoded frames: Table 3 not interpretable"
DECODING_GAP_COLUMNS = ("gap_action_l1", "gap_action_scale", "gap_ratio", "decoding_gap_flag")


def _gap_cells(l1: float, scale: float) -> dict[str, object]:
    ratio = l1 / scale if scale > 0 else (math.inf if l1 > 0 else math.nan)
    return {"gap_action_l1": l1, "gap_action_scale": scale, "gap_ratio": ratio,
            "decoding_gap_flag": bool(np.isfinite(l1) and np.isfinite(scale) and l1 > scale * DECODING_GAP_LIMIT)}


def decoding_gap_columns(table: pd.DataFrame, calibration: pd.DataFrame | None) -> pd.DataFrame:
    """Table 3 with the decoding gap of ``imagined_env_calibration`` (``stages.wmrl.decoding_gap``) beside it.

    Columns ``gap_action_l1`` (mean |a(rendered) - a(decoded)| of the start policy's chunks), ``gap_action_scale``
    (mean |a(rendered)|), ``gap_ratio`` (l1 / scale) and ``decoding_gap_flag`` (l1 > scale / 3). Task rows take
    the task's own numbers when the calibration has them (``gap_by_task``), else the pooled ones; the average row
    the pooled ones. No gap in the calibration (rl.policy token: no decoder; or no calibration): NaN, not flagged.
    """
    out = table.copy()
    row = calibration.iloc[0] if calibration is not None and len(calibration) else None
    has = row is not None and "gap_action_l1" in row.index and pd.notna(row["gap_action_l1"])
    pooled = _gap_cells(float(row["gap_action_l1"]), float(row["gap_action_scale"])) if has else \
        _gap_cells(math.nan, math.nan)
    by_task = {}
    if has and "gap_by_task" in row.index and isinstance(row["gap_by_task"], str):
        import json

        by_task = {t: _gap_cells(float(v["gap_action_l1"]), float(v["gap_action_scale"]))
                   for t, v in json.loads(row["gap_by_task"]).items()}
    cells = [pooled if t == "average" else by_task.get(t, pooled) for t in out["task"]]
    for c in DECODING_GAP_COLUMNS:
        out[c] = [cell[c] for cell in cells]
    return out


def decoding_gap_markdown(table: pd.DataFrame) -> str:
    """Lines for Table 3's markdown: the gap numbers (pooled, and per flagged task) and, when any row is flagged,
    the warning that Table 3 cannot be read as a test of WMRL. Empty when the table has no gap (token policy)."""
    if "gap_action_l1" not in table.columns:
        return ""
    avg = table[table["task"] == "average"]
    ref = avg.iloc[0] if len(avg) else table.iloc[0]
    if pd.isna(ref["gap_action_l1"]):
        return ""
    lines = [f"Decoding gap (start policy on decoded vs rendered start frames, `imagined_env_calibration`): "
             f"gap_action_l1 = {ref['gap_action_l1']:.4g}, gap_action_scale = {ref['gap_action_scale']:.4g}, "
             f"ratio = {ref['gap_ratio']:.3g} (flagged above {DECODING_GAP_LIMIT:.3g})."]
    flagged = table[table["decoding_gap_flag"].astype(bool)]
    if len(flagged):
        where = ", ".join(f"{r['task']} ({r['gap_ratio']:.3g})" for _, r in flagged.iterrows())
        lines.append(f"**{DECODING_GAP_FLAG}** (gap_action_l1 > gap_action_scale / 3: {where}).")
    return "\n\n".join(lines)


def with_decoding_gap(table: pd.DataFrame, markdown: str, calibration: pd.DataFrame | None
                      ) -> tuple[pd.DataFrame, str]:
    """Table 3 (table, markdown) -> the same with the decoding gap: :func:`decoding_gap_columns` on the table, the
    numbers appended to the markdown, and when any row is flagged the warning right under its title and in the log."""
    import logging

    t = decoding_gap_columns(table, calibration)
    gap = decoding_gap_markdown(t)
    md = markdown.rstrip("\n") + (f"\n\n{gap}\n" if gap else "\n")
    if t["decoding_gap_flag"].any():
        flagged = t.loc[t["decoding_gap_flag"], ["task", "gap_action_l1", "gap_action_scale", "gap_ratio"]]
        logging.getLogger(__name__).warning("%s: %s", DECODING_GAP_FLAG, flagged.to_dict("records"))
        head, sep, rest = md.partition("\n")  # the "## title" line first
        md = f"{head}{sep}\n**{DECODING_GAP_FLAG}** (decoding gap at the end)\n{rest}"
    return t, md


def speed_markdown(speed: pd.DataFrame) -> str:
    """Markdown of the speed table (one row per measured loop)."""
    cols = list(speed.columns)
    lines = ["## Imagined vs real environment speed (same machine)", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for _, r in speed.iterrows():
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.tolist()) + " |")
    return "\n".join(lines) + "\n"
