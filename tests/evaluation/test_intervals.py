"""Interval cells of the tables people read: a bootstrap without an interval says why instead of printing
[v, v] (issue 21, item 5)."""
from __future__ import annotations

import math

from rla_pipeline.evaluation.intervals import interval_cell, no_interval_reason


def test_interval_cell_formats_bounds_as_before():
    assert interval_cell(0.9962, 0.95, 1.02, episodes=5) == "0.996 [0.950, 1.020]"
    assert interval_cell(35.0, 12.5, 57.5, digits=1, signed=True) == "+35.0 [+12.5, +57.5]"


def test_interval_cell_without_bounds_names_the_reason():
    assert interval_cell(0.9962, math.nan, math.nan, episodes=1) == "0.996 [n/a (1 episode)]"
    assert interval_cell(0.5, None, None, episodes=0) == "0.500 [n/a (0 episodes)]"
    assert interval_cell(0.5, math.nan, math.nan, episodes=4) == "0.500 [n/a]"  # e.g. a metric not computed
    per_task = interval_cell(0.5, math.nan, math.nan, reason="n/a (1 episode per task)")
    assert per_task == "0.500 [n/a (1 episode per task)]"
    assert interval_cell(math.nan, math.nan, math.nan, episodes=1) == "–"
    assert no_interval_reason(None) == "n/a" and no_interval_reason(1) == "n/a (1 episode)"
