"""Progress of long loops (training steps, feature encoding, simulator episodes, PPO updates), one helper for all.

```python
with Progress(total=2000, desc="rla", unit="step") as bar:
    for step in ...:
        ...
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4g}")
```
Where the output goes:
  * stderr is a terminal (or a Jupyter kernel): a tqdm bar (tqdm shows the rate and the time left);
  * otherwise (Kedro runs to a log file or pipe, CI logs): one INFO log line on the ``rla_pipeline.utils.progress``
    logger every ``RLA_PROGRESS_INTERVAL`` seconds (default 30) or every 10 % of the work, whichever comes first,
    but never two lines within a tenth of the interval, and a last line when the work is done, e.g.
    ``rla: 600/2000 steps (30%), 12.4 steps/s, elapsed 0:48, ETA 1:53 | loss=0.0123``.

Environment: ``RLA_PROGRESS=0`` (or off/false/no) silences every bar and line; ``RLA_PROGRESS=bar`` forces the tqdm
bar, ``RLA_PROGRESS=log`` forces the log lines; ``RLA_PROGRESS_INTERVAL=<seconds>`` sets the line interval.
The helper only reads a clock: it draws no random numbers and touches no tensors, so results do not depend on it.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Callable, TextIO

logger = logging.getLogger(__name__)

ENV_MODE = "RLA_PROGRESS"
ENV_INTERVAL = "RLA_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
PERCENT_STEP = 10  # a line at every 10 % of the work (rate-limited by the minimum gap)
_OFF = {"0", "off", "false", "no", "none"}


def progress_mode(enabled: bool = True, stream: TextIO | None = None) -> str:
    """``"off"``, ``"bar"`` (tqdm) or ``"log"`` (rate-limited log lines) for a loop that wants progress
    (``enabled``), from ``RLA_PROGRESS`` and whether ``stream`` (default stderr) is a terminal."""
    env = os.environ.get(ENV_MODE, "").strip().lower()
    if not enabled or env in _OFF:
        return "off"
    if env in ("bar", "tqdm"):
        return "bar"
    if env in ("log", "lines", "line"):
        return "log"
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        tty = False
    return "bar" if tty or "ipykernel" in sys.modules else "log"


def _interval_from_env() -> float:
    raw = os.environ.get(ENV_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        logger.warning("%s=%r is not a number of seconds; using %g", ENV_INTERVAL, raw, DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"`` (``"?"`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(rate: float, unit: str) -> str:
    """``12.4 steps/s``, or ``4.1 s/update`` below one per second (tqdm's convention)."""
    if not math.isfinite(rate) or rate <= 0:
        return f"? {unit}s/s"
    if rate >= 1:
        return f"{rate:.3g} {unit}s/s"
    return f"{1.0 / rate:.3g} s/{unit}"


class Progress:
    """Progress of ``total`` units of work: a tqdm bar on a terminal, rate-limited log lines elsewhere, nothing
    when disabled (``enabled=False`` or ``RLA_PROGRESS=0``). See the module docstring.

    ``initial``: units already done (a resumed run); the rate and ETA count only the work done here.
    ``mode``, ``interval``, ``min_gap``, ``clock``, ``log`` and ``stream`` are for tests and special callers:
    by default they come from the environment, ``RLA_PROGRESS_INTERVAL`` (``min_gap`` = interval / 10),
    ``time.monotonic``, this module's logger and stderr.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, initial: int = 0, enabled: bool = True,
                 mode: str | None = None, interval: float | None = None, min_gap: float | None = None,
                 clock: Callable[[], float] = time.monotonic, log: logging.Logger | None = None,
                 stream: TextIO | None = None) -> None:
        self.total = int(total) if total else None
        self.desc, self.unit = desc, unit
        self.initial = self.done = int(initial)
        self.mode = mode or progress_mode(enabled, stream)
        if self.mode not in ("off", "bar", "log"):
            raise ValueError(f"Progress mode must be 'off', 'bar' or 'log', got {self.mode!r}")
        self.interval = _interval_from_env() if interval is None else float(interval)
        self.min_gap = self.interval / 10 if min_gap is None else float(min_gap)
        self._clock, self._log = clock, log or logger
        self._postfix: dict[str, Any] = {}
        self._bar = None
        self._closed = False
        self._t0 = self._last_t = clock()
        self._last_done = self.done
        self.lines = 0  # log lines written so far
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, dynamic_ncols=True,
                             file=stream)

    # ------------------------------------------------------------------ public
    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def update(self, n: int = 1) -> None:
        """``n`` more units done; may write a log line (log mode) or redraw the bar."""
        if self._closed:
            return
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log" and self._due(self._clock()):
            self._emit()

    def set_postfix(self, **values: Any) -> None:
        """Extra ``key=value`` fields after the numbers (e.g. the loss); they replace the previous ones."""
        self._postfix = {k: v for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(refresh=False, **values)

    def close(self) -> None:
        """End the bar; in log mode, report work not yet reported (e.g. a loop stopped early)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "log" and self.done != self._last_done:
            self._emit()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self, now: float | None = None) -> str:
        """The progress line as it would be logged now."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._t0, 0.0)
        worked = self.done - self.initial
        rate = worked / elapsed if elapsed > 0 else float("nan")
        unit_s = f"{self.unit}s"
        if self.total:
            pct = 100.0 * self.done / self.total
            head = f"{self.desc}: {self.done}/{self.total} {unit_s} ({pct:.0f}%)"
        else:
            head = f"{self.desc}: {self.done} {unit_s}"
        parts = [head, format_rate(rate, self.unit), f"elapsed {format_duration(elapsed)}"]
        if self.total and self.done >= self.total:
            parts[0] += " done"
        elif self.total:
            left = (self.total - self.done) / rate if worked > 0 and rate > 0 else float("nan")
            parts.append(f"ETA {format_duration(left)}")
        text = ", ".join(parts)
        if self._postfix:
            text += " | " + " ".join(f"{k}={v}" for k, v in self._postfix.items())
        return text

    # ----------------------------------------------------------------- private
    def _due(self, now: float) -> bool:
        if self.total and self.done >= self.total:
            return self._last_done < self.total  # the last line once, whatever the time
        since = now - self._last_t
        if since >= self.interval:
            return True
        if self.total and since >= self.min_gap:
            step = self.total * PERCENT_STEP / 100.0
            return int(self.done // step) > int(self._last_done // step)
        return False

    def _emit(self) -> None:
        now = self._clock()
        self._log.info("%s", self.line(now))
        self._last_t, self._last_done = now, self.done
        self.lines += 1


__all__ = ["Progress", "progress_mode", "format_duration", "format_rate", "ENV_MODE", "ENV_INTERVAL"]
