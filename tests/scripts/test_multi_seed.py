"""scripts/multi_seed.py --summarise-only: per-seed tables -> summary CSVs with mean and spread across seeds."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_summaries_keep_robots_apart_and_average_per_episode_rows_per_seed_first(tmp_path):
    for s in (0, 1):
        rep = tmp_path / "seeds" / f"seed_{s}" / "08_reporting"
        rep.mkdir(parents=True)
        pd.DataFrame({"robot": ["panda", "panda_stick"], "model": ["rla_wm"] * 2, "horizon": [5, 5],
                      "vs_copy": [0.8 + 0.1 * s, 0.5]}).to_parquet(rep / "wm_prediction_table.parquet")
        pd.DataFrame({"episode_id": ["a", "b"], "t": [0, 0], "h": [10, 10], "spearman": [s, s + 0.5],
                      "spearman_shuffled_z": [0.0, 0.0]}).to_parquet(rep / "rla_temporal_progression.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "multi_seed.py"), "--seeds", "0", "1",
                           "--data-root", str(tmp_path), "--summarise-only"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wm = pd.read_csv(tmp_path / "seeds" / "summary_wm_prediction_table.csv").set_index("robot")
    assert wm.loc["panda", "vs_copy_mean"] == pytest.approx(0.85) and wm.loc["panda_stick", "vs_copy_std"] == 0.0
    prog = pd.read_csv(tmp_path / "seeds" / "summary_rla_temporal_progression.csv")
    assert prog["spearman_mean"].item() == pytest.approx(0.75)  # seed means 0.25 and 1.25
    assert prog["rows_mean"].item() == 2 and prog["seeds"].item() == 2


def test_summaries_of_the_one_row_per_h_progression_table(tmp_path):
    """The progression table as the rla stage writes it now (one row per h, a verdict in words, list columns)."""
    for s in (0, 1):
        rep = tmp_path / "seeds" / f"seed_{s}" / "08_reporting"
        rep.mkdir(parents=True)
        pd.DataFrame({"h": [15], "pairs": [64], "episodes": [8], "decoder_over_copy": [0.8],
                      "progress_at_1_diff": [0.2 + 0.2 * s], "progress_at_1_diff_ci_low": [0.1 * s - 0.05],
                      "progress_curve": [[0.0, 0.4, 0.8]], "verdict": ["not shown: ..." if s == 0 else "shown: ..."],
                      "shown": [float(s)]}).to_parquet(rep / "rla_temporal_progression.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "multi_seed.py"), "--seeds", "0", "1",
                           "--data-root", str(tmp_path), "--summarise-only"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prog = pd.read_csv(tmp_path / "seeds" / "summary_rla_temporal_progression.csv")
    assert prog["progress_at_1_diff_mean"].item() == pytest.approx(0.3)
    assert prog["shown_mean"].item() == pytest.approx(0.5) and prog["rows_mean"].item() == 1


def test_the_default_run_counts_as_a_seed_without_running_it_again(tmp_path):
    """--default-run-is-seed 0: <data>/08_reporting is seed 0's table; no kedro run is started for it (with
    --summarise-only absent, seed 0 would otherwise be run: here only seed 0 is asked for, so nothing runs)."""
    rep = tmp_path / "08_reporting"
    rep.mkdir()
    pd.DataFrame({"split": ["val"], "h": [5], "ratio": [0.8]}).to_parquet(rep / "rla_metrics.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "multi_seed.py"), "--seeds", "0",
                           "--data-root", str(tmp_path), "--default-run-is-seed", "0"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kedro" not in proc.stdout  # nothing was run
    out = pd.read_csv(tmp_path / "seeds" / "summary_rla_metrics.csv")
    assert out["ratio_mean"].item() == pytest.approx(0.8) and out["seeds"].item() == 1
