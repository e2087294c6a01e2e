"""Wilson intervals on known counts and the paper-shaped tables with their verdict."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rla_pipeline.evaluation.success import PAPER_LABEL, comparison_table, table_markdown, wilson_interval, PAPER_TABLE2


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def _episodes(rates: dict[tuple[str, str], int], n=10):
    rows = []
    for (policy, task), k in rates.items():
        rows += [{"policy": policy, "task": task, "seed": 10_000 + i, "success": i < k} for i in range(n)]
    return pd.DataFrame(rows)


def test_comparison_table_and_verdict():
    eps = _episodes({("bc", "PullCube-v1"): 1, ("bc_rla", "PullCube-v1"): 10,
                     ("bc", "PushCube-v1"): 5, ("bc_rla", "PushCube-v1"): 5})
    t = comparison_table(eps, "bc", "bc_rla", PAPER_TABLE2, ("BC-ResNet", "+RLA"))
    assert t["task"].tolist() == ["PullCube-v1", "PushCube-v1", "average"]
    pull = t.iloc[0]
    assert pull["bc_sr"] == 10.0 and pull["bc_rla_sr"] == 100.0 and pull["verdict"] == "bc_rla better"
    assert pull[f"{PAPER_LABEL}: +RLA"] == 43.6  # the paper's PullCube number, labelled as reference
    assert pd.isna(t.iloc[1][f"{PAPER_LABEL}: BC-ResNet"])  # PushCube is not in the paper's table
    assert t.iloc[1]["verdict"] == "no clear difference"
    avg = t.iloc[2]
    assert avg["bc_n"] == 20 and avg["bc_sr"] == 30.0 and avg["bc_rla_sr"] == 75.0
    assert avg[f"{PAPER_LABEL}: BC-ResNet"] == 27.2
    md = table_markdown(t, "bc", "bc_rla", "Table 2")
    assert "Verdict: bc_rla beats bc" in md and PAPER_LABEL in md


def test_verdict_says_plainly_when_method_does_not_win():
    eps = _episodes({("token_bc", "PokeCube-v1"): 6, ("wmrl", "PokeCube-v1"): 4})
    t = comparison_table(eps, "token_bc", "wmrl", {}, ("BC-ResNet", "WMRL"))
    md = table_markdown(t, "token_bc", "wmrl", "Table 3")
    assert "Verdict: cannot tell whether wmrl beats token_bc" in md and "does NOT" not in md  # the interval says no more


# ---------------------------------------------------------------- paired comparisons (issue 11, evidence)
from rla_pipeline.evaluation.success import (  # noqa: E402
    episodes_to_resolve, mcnemar_exact, paired_difference, paired_outcomes,
)


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 9) == pytest.approx(2 / 512)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0


def test_paired_verdict_where_wilson_intervals_overlap():
    # method succeeds on every seed the baseline does plus 7 more: Wilson intervals overlap (50% vs 85% of 20),
    # but 7 discordant pairs all one way is McNemar p = 2/128 < 0.05: the paired test sees what non-overlap cannot.
    eps = _episodes({("bc", "PullCube-v1"): 10, ("bc_rla", "PullCube-v1"): 17}, n=20)
    t = comparison_table(eps, "bc", "bc_rla", {}, ("BC-ResNet", "+RLA"))
    row = t.iloc[0]
    assert row["bc_ci_high"] > row["bc_rla_ci_low"]  # the intervals overlap
    assert (row["only_baseline"], row["only_method"]) == (0, 7)
    assert row["p_mcnemar"] == pytest.approx(2 / 128) and row["verdict"] == "bc_rla better"
    assert row["diff"] == pytest.approx(35.0) and row["diff_ci_low"] > 0
    md = table_markdown(t, "bc", "bc_rla", "Table 2")
    assert "+35.0 [" in md and "McNemar" in md


def test_paired_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(1)
    n = 400
    base = rng.random(n) < 0.5
    # the method wins 15 points: flips 60 of the baseline's failures to successes
    meth = base.copy()
    meth[np.flatnonzero(~base)[:60]] = True
    pairs = pd.DataFrame({"task": np.where(np.arange(n) % 2, "A", "B"), "seed": np.arange(n), "base": base,
                          "meth": meth})
    d = paired_difference(pairs, n_boot=2000, seed=0)
    assert d["diff"] == pytest.approx(15.0)
    assert d["diff_ci_low"] < 15.0 < d["diff_ci_high"] and d["diff_ci_low"] > 0
    assert d["p_mcnemar"] < 1e-10


def test_unpaired_seeds_are_refused():
    eps = _episodes({("bc", "PullCube-v1"): 3, ("bc_rla", "PullCube-v1"): 3})
    eps.loc[eps.index[-1], "seed"] = 99  # the method ran one other seed
    with pytest.raises(ValueError, match="same evaluation seeds"):
        paired_outcomes(eps, "bc", "bc_rla")


def test_episodes_to_resolve_a_15_point_difference():
    n = episodes_to_resolve(0.5, 0.65)  # independent outcomes: discordance 0.5
    assert n == 173  # (1.96 sqrt(.5) + 0.842 sqrt(.5 - .0225))^2 / .0225 = 172.04
    assert episodes_to_resolve(0.5, 0.65, discordance=0.25) < n  # correlated policies need fewer
    with pytest.raises(ValueError):
        episodes_to_resolve(0.5, 0.5)


# ---------------------------------------------------------------- the paper's tasks, rows and robots (issue 14.2)
def test_tables_name_the_papers_rows_and_both_robots():
    from rla_pipeline.evaluation.success import PAPER_TABLE2_ROBOTS, PAPER_TABLE2_TASKS, paper_column
    from rla_pipeline.sim.envs import TASK_ROBOTS

    eps = _episodes({(p, t): k for t, k in zip(PAPER_TABLE2_TASKS, range(5)) for p in ("bc", "bc_rla")})
    t = comparison_table(eps, "bc", "bc_rla", PAPER_TABLE2, ("BC-ResNet", "+RLA"), paper_table="Table 2",
                         robots=TASK_ROBOTS, paper_robots=PAPER_TABLE2_ROBOTS)
    assert t["task"].tolist() == [*PAPER_TABLE2_TASKS, "average"]
    col = paper_column("Table 2", "+RLA")
    assert col.startswith(PAPER_LABEL) and "Table 2" in col and "+RLA" in col
    by_task = t.set_index("task")
    # every paper column of Table 2 is filled with the paper's own number for that task
    assert by_task[col].tolist() == [15.2, 43.8, 43.6, 12.0, 63.6, 35.6]
    assert by_task.loc["PushT-v1", "robot (ours)"] == "panda_stick"
    assert by_task.loc["PushT-v1", "robot (paper)"] == "UR10e + stick"
    assert by_task.loc["PokeCube-v1", "robot (ours)"] == "panda"
    assert by_task.loc["PokeCube-v1", "robot (paper)"] == "xArm6 + Robotiq"
    md = table_markdown(t, "bc", "bc_rla", "Table 2")
    assert "| robot (ours) | robot (paper) |" in md and f" {col} |" in md
    assert "| PushT-v1 | panda_stick | UR10e + stick |" in md


def test_table3_runs_on_the_papers_three_tasks_in_the_papers_order():
    from rla_pipeline.evaluation.success import PAPER_TABLE2_TASKS
    from rla_pipeline.stages.evaluation import EvaluationConfig, table3_tasks

    cfg = EvaluationConfig()
    assert table3_tasks(cfg, PAPER_TABLE2_TASKS) == ["PokeCube-v1", "RollBall-v1", "PushT-v1"]
    assert table3_tasks(cfg, ["PushCube-v1", "PokeCube-v1"]) == ["PokeCube-v1"]  # the others are not in the run
    assert table3_tasks(EvaluationConfig.from_dict({"table3_tasks": None}), ["PushCube-v1"]) == ["PushCube-v1"]
    with pytest.raises(ValueError, match="table3_tasks"):
        table3_tasks(cfg, ["PushCube-v1"])


# ---------------------------------------------------------------- Table 3 beside the decoding gap (issue 19)
def _calibration(l1: float, scale: float, by_task: dict | None = None) -> pd.DataFrame:
    import json

    row = {"policy": "bc_resnet", "gap_action_l1": l1, "gap_action_scale": scale, "gap_decoded_psnr": 20.0}
    if by_task is not None:
        row["gap_by_task"] = json.dumps({t: {"gap_action_l1": a, "gap_action_scale": b, "frames": 6}
                                         for t, (a, b) in by_task.items()})
    return pd.DataFrame([row])


def test_table3_carries_the_decoding_gap_and_flags_an_unreadable_decoder(caplog):
    from rla_pipeline.evaluation.success import DECODING_GAP_FLAG
    from rla_pipeline.stages.evaluation import wmrl_success_table

    eps = _episodes({("bc", "PokeCube-v1"): 4, ("wmrl", "PokeCube-v1"): 6,
                     ("bc", "PushT-v1"): 1, ("wmrl", "PushT-v1"): 2})
    # readable: l1 = 0.05 of scale 0.3 (ratio 1/6 < 1/3): the numbers are there, no flag
    t, md = wmrl_success_table(eps, _calibration(0.05, 0.3))
    assert {"gap_action_l1", "gap_action_scale", "gap_ratio", "decoding_gap_flag"} <= set(t.columns)
    assert (t["gap_action_l1"] == 0.05).all() and (t["gap_action_scale"] == 0.3).all()
    assert t["gap_ratio"].tolist() == pytest.approx([1 / 6] * 3) and not t["decoding_gap_flag"].any()
    assert "gap_action_l1 = 0.05" in md and "gap_action_scale = 0.3" in md and DECODING_GAP_FLAG not in md
    # unreadable: l1 = 0.15 > 0.3 / 3 -> flagged in the table, under the markdown's title and in the log
    with caplog.at_level("WARNING"):
        t, md = wmrl_success_table(eps, _calibration(0.15, 0.3))
    assert t["decoding_gap_flag"].all() and t["gap_ratio"].tolist() == pytest.approx([0.5] * 3)
    title, _, rest = md.partition("\n")
    assert title.startswith("## Table 3") and rest.lstrip().startswith(f"**{DECODING_GAP_FLAG}**")
    assert DECODING_GAP_FLAG in caplog.text
    # per task when the calibration has it: only the task the policy cannot read is flagged; average = pooled
    t, md = wmrl_success_table(eps, _calibration(0.08, 0.3, {"PokeCube-v1": (0.02, 0.3), "PushT-v1": (0.2, 0.3)}))
    by = t.set_index("task")
    assert not by.loc["PokeCube-v1", "decoding_gap_flag"] and by.loc["PushT-v1", "decoding_gap_flag"]
    assert by.loc["PushT-v1", "gap_action_l1"] == 0.2 and by.loc["average", "gap_action_l1"] == 0.08
    assert not by.loc["average", "decoding_gap_flag"] and f"**{DECODING_GAP_FLAG}**" in md and "PushT-v1 (0.667)" in md
    # the token policy has no decoder: NaN gap, nothing flagged, no gap line; no calibration at all: the same
    token_eps = _episodes({("token_bc", "PushT-v1"): 1, ("wmrl", "PushT-v1"): 1})
    for calib in (pd.DataFrame([{"policy": "token"}]), None):
        t, md = wmrl_success_table(token_eps, calib)
        assert t["gap_action_l1"].isna().all() and not t["decoding_gap_flag"].any()
        assert "Decoding gap" not in md and DECODING_GAP_FLAG not in md


# ---------------------------------------------------------------- honest intervals (issue 21, item 5)
def test_paired_difference_of_one_episode_per_task_has_no_interval():
    one = pd.DataFrame({"task": ["A"], "seed": [0], "base": [False], "meth": [True]})
    d = paired_difference(one, n_boot=200, seed=0)
    assert d["diff"] == 100.0 and np.isnan(d["diff_ci_low"]) and np.isnan(d["diff_ci_high"])
    # one pair in each of two tasks: the stratified resample cannot vary either
    two = pd.DataFrame({"task": ["A", "B"], "seed": [0, 0], "base": [False, True], "meth": [True, True]})
    d = paired_difference(two, n_boot=200, seed=0)
    assert d["diff"] == 50.0 and np.isnan(d["diff_ci_low"]) and np.isnan(d["diff_ci_high"])


def test_paired_difference_of_several_episodes_keeps_its_draws():
    pairs = pd.DataFrame({"task": ["A"] * 3 + ["B"] * 2, "seed": range(5), "base": [0, 1, 0, 1, 0],
                          "meth": [1, 1, 0, 0, 1]}).astype({"base": bool, "meth": bool})
    d = pairs["meth"].to_numpy(int) - pairs["base"].to_numpy(int)
    rng = np.random.default_rng(3)
    sums = np.zeros(400)
    for idx in (np.arange(3), np.arange(3, 5)):
        sums += d[idx][rng.integers(0, len(idx), size=(400, len(idx)))].sum(1)
    out = paired_difference(pairs, n_boot=400, seed=3)
    assert out["diff_ci_low"] == np.quantile(100 * sums / 5, 0.025)
    assert out["diff_ci_high"] == np.quantile(100 * sums / 5, 0.975)


def test_markdown_says_why_a_one_episode_cell_has_no_interval():
    eps = _episodes({("bc", "PullCube-v1"): 0, ("bc_rla", "PullCube-v1"): 1}, n=1)
    t = comparison_table(eps, "bc", "bc_rla", {}, ("BC-ResNet", "+RLA"))
    md = table_markdown(t, "bc", "bc_rla", "Table 2")
    assert "+100.0 [n/a (1 episode)]" in md and "[+100.0, +100.0]" not in md
    assert "no paired 95% interval (1 episode)" in md and "does not exclude 0" not in md
