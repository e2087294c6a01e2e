"""Interval cells for the tables people read (Markdown / HTML): ``value [low, high]``, or ``value [n/a (1 episode)]``
when there is no interval.

The episode bootstraps (:func:`rla_pipeline.evaluation.metrics.episode_bootstrap` and siblings,
:func:`rla_pipeline.evaluation.success.paired_difference`) give NaN bounds when they cannot vary (fewer than
:data:`MIN_BOOTSTRAP_UNITS` episodes to resample): a zero-width interval from resampling one episode would read as
certainty. This module only formats; it imports neither torch nor numpy so the report and the scripts can use it.
"""
from __future__ import annotations

import math
from typing import Any

#: fewer resampling units (episodes) than this: the bootstrap redraws the same data every time, no interval
MIN_BOOTSTRAP_UNITS = 2


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def no_interval_reason(episodes: Any = None, unit: str = "episode") -> str:
    """Why a cell has no interval: ``"n/a (1 episode)"`` when ``episodes`` is below :data:`MIN_BOOTSTRAP_UNITS`,
    else plain ``"n/a"`` (e.g. a metric that was not computed)."""
    if _missing(episodes):
        return "n/a"
    n = int(episodes)
    if n < MIN_BOOTSTRAP_UNITS:
        return f"n/a ({n} {unit}{'' if n == 1 else 's'})"
    return "n/a"


def interval_cell(value: Any, low: Any, high: Any, episodes: Any = None, digits: int = 3, signed: bool = False,
                  unit: str = "episode", reason: str | None = None) -> str:
    """``"v [low, high]"`` with ``digits`` decimals (``signed``: always a sign); ``"v [n/a (1 episode)]"`` when a
    bound is missing (``reason`` overrides the bracket's text); ``"–"`` when the value itself is missing."""
    if _missing(value):
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    v = fmt.format(float(value))
    if _missing(low) or _missing(high):
        return f"{v} [{reason or no_interval_reason(episodes, unit)}]"
    return f"{v} [{fmt.format(float(low))}, {fmt.format(float(high))}]"
