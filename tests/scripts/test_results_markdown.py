"""scripts/results_markdown.py: a one-episode interval and an unknown demo success rate are printed as such."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("results_markdown", ROOT / "scripts" / "results_markdown.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_episode_interval_and_unknown_demo_rate(tmp_path, monkeypatch, capsys):
    mod = _script()
    monkeypatch.setattr(mod, "node_times", lambda uri: None)  # no MLflow store is read
    rep = tmp_path / "08_reporting"
    rep.mkdir()
    nan = math.nan
    pd.DataFrame({"robot": ["so100"] * 2, "model": ["copy", "rla_wm"], "horizon": [5, 5], "pairs": [8, 8],
                  "episodes": [1, 1], "token_l1": [0.2, 0.19], "vs_copy": [1.0, 0.9962],
                  "vs_copy_ci_low": [nan, nan], "vs_copy_ci_high": [nan, nan], "ref_minus_vs_copy": [nan, nan],
                  "ref_minus_ci_low": [nan, nan], "ref_minus_ci_high": [nan, nan]}
                 ).to_parquet(rep / "wm_prediction_table.parquet")
    pd.DataFrame({"task": ["LeRobotPush", "LeRobotPush", "PushCube-v1"], "kind": ["demo", "actionless", "demo"],
                  "episodes": [2, 1, 3], "frames": [9, 5, 60], "successes": [0, 0, 3], "attempted": [2, 1, 4],
                  "demo_success_rate": [nan, nan, 0.75], "skipped": [0, 0, 1]}
                 ).to_parquet(rep / "ingestion_summary.parquet")
    assert mod.main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1.00 [n/a (1 episode)]" in out and "[1.00, 1.00]" not in out  # 0.9962 at 2 digits
    lines = {ln.split("|")[1].strip() + "/" + ln.split("|")[2].strip(): ln for ln in out.splitlines()
             if ln.startswith("| ") and ln.count("|") > 8}
    assert "| unknown |" in lines["LeRobotPush/demo"] and "| – |" in lines["LeRobotPush/actionless"]
    assert "| 0.750 |" in lines["PushCube-v1/demo"]
