"""Mean and spread over seeds of a results table (issue 11: evidence over several seeds)."""
import numpy as np
import pandas as pd
import pytest

from rla_pipeline.evaluation.seeds import across_seeds


def test_across_seeds_mean_and_spread_per_row():
    t = {s: pd.DataFrame({"model": ["a", "b"], "horizon": [5, 5], "vs_copy": [0.5 + 0.1 * s, 1.0],
                          "note": ["x", "y"]}) for s in (0, 1, 2)}
    out = across_seeds(t, ["model", "horizon"]).set_index("model")
    assert out.loc["a", "vs_copy_mean"] == pytest.approx(0.6) and out.loc["a", "vs_copy_std"] == pytest.approx(0.1)
    assert out.loc["a", "vs_copy_min"] == pytest.approx(0.5) and out.loc["a", "vs_copy_max"] == pytest.approx(0.7)
    assert out.loc["b", "vs_copy_std"] == 0.0 and (out["seeds"] == 3).all()
    assert "note_mean" not in out.columns  # text columns are not averaged
    one = across_seeds({0: t[0]}, ["model", "horizon"])
    assert np.isnan(one["vs_copy_std"]).all()
