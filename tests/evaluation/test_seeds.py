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


def _wm_table(seed: int) -> pd.DataFrame:
    """A world-model table as the multi-robot stage writes it: one row per (robot, model, horizon)."""
    return pd.DataFrame({"robot": ["panda", "panda", "panda_stick", "panda_stick"], "model": ["rla_wm", "copy"] * 2,
                         "horizon": [5] * 4, "vs_copy": [0.8 + 0.1 * seed, 1.0, 0.5, 1.0]})


def test_rows_that_the_keys_do_not_tell_apart_raise_instead_of_being_averaged_together():
    from rla_pipeline.evaluation.seeds import TABLE_KEYS

    t = {s: _wm_table(s) for s in (0, 1)}
    with pytest.raises(ValueError, match="not unique per seed"):
        across_seeds(t, ["model", "horizon"])  # the keys before session 5: panda and panda_stick mixed
    out = across_seeds(t, TABLE_KEYS["wm_prediction_table"]).set_index(["robot", "model"])
    assert out.loc[("panda", "rla_wm"), "vs_copy_mean"] == pytest.approx(0.85)
    assert out.loc[("panda_stick", "rla_wm"), "vs_copy_mean"] == pytest.approx(0.5)
    assert out.loc[("panda_stick", "rla_wm"), "vs_copy_std"] == 0.0
    # a table without the robot column (one-robot run) still summarises on the keys it has
    no_robot = across_seeds({s: t[s][t[s].robot == "panda"].drop(columns="robot") for s in t},
                            TABLE_KEYS["wm_prediction_table"])
    assert list(no_robot["model"]) == ["rla_wm", "copy"]


def test_per_episode_rows_are_averaged_per_seed_first_so_the_spread_is_across_seeds():
    from rla_pipeline.evaluation.seeds import summarise_seed

    rows = {s: pd.DataFrame({"episode_id": ["a", "a", "b", "b"], "h": [10] * 4,
                             "spearman": [s, s + 0.2, s - 0.2, s]}) for s in (0.0, 1.0, 2.0)}
    per_seed = {s: summarise_seed(t, ["h"]) for s, t in rows.items()}
    assert per_seed[1.0]["spearman"].item() == pytest.approx(1.0) and per_seed[1.0]["rows"].item() == 4
    out = across_seeds(per_seed, ["h"])
    assert out["spearman_mean"].item() == pytest.approx(1.0)
    assert out["spearman_std"].item() == pytest.approx(1.0)  # seeds 0, 1, 2; not the within-seed spread
    one_row = across_seeds({s: pd.DataFrame({"x": [float(s)]}) for s in (0, 2)}, [])  # e.g. a calibration row
    assert one_row["x_mean"].item() == pytest.approx(1.0) and one_row["seeds"].item() == 2


def test_one_row_per_h_progression_tables_summarise_over_seeds_with_the_share_shown():
    """The progression table is one row per h (numbers, lists, a verdict in words): per-seed summarising leaves it
    as it is, and across seeds the numeric columns get their spread; ``shown`` becomes the share of seeds."""
    from rla_pipeline.evaluation.seeds import PER_SEED_MEAN, TABLE_KEYS, summarise_seed

    name = "rla_temporal_progression"
    tables = {s: pd.DataFrame({"h": [15], "pairs": [64], "progress_at_1_diff": [0.1 * s],
                               "progress_at_1_diff_ci_low": [0.1 * s - 0.05], "progress_curve": [[0.0, 0.5, 1.0]],
                               "verdict": ["shown: ..." if s else "not shown: ..."], "shown": [1.0 if s else 0.0]})
              for s in (0, 1, 2)}
    assert name in PER_SEED_MEAN
    per_seed = {s: summarise_seed(t, TABLE_KEYS[name]) for s, t in tables.items()}
    assert per_seed[2]["progress_at_1_diff"].item() == pytest.approx(0.2) and per_seed[2]["rows"].item() == 1
    out = across_seeds(per_seed, TABLE_KEYS[name])
    assert out["progress_at_1_diff_mean"].item() == pytest.approx(0.1)
    assert out["shown_mean"].item() == pytest.approx(2 / 3) and out["seeds"].item() == 3
    assert "verdict_mean" not in out.columns and "progress_curve_mean" not in out.columns
