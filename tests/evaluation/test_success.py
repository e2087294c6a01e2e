"""Wilson intervals on known counts and the paper-shaped tables with their verdict."""
from __future__ import annotations

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
    assert "Verdict: wmrl does NOT beat token_bc" in table_markdown(t, "token_bc", "wmrl", "Table 3")
