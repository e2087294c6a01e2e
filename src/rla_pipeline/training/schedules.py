"""Learning-rate multipliers (for ``torch.optim.lr_scheduler.LambdaLR``): linear warmup, then cosine or constant."""
from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("cosine", "constant")


def lr_multiplier(step: int, *, warmup_steps: int, max_steps: int, schedule: str) -> float:
    """Multiplier of the base LR for the update that follows ``step`` completed updates (0-based).

    Warmup: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` updates, so the first update
    already moves. Then ``cosine`` decays from 1 to 0 at ``max_steps``; ``constant`` stays at 1.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_lr_lambda(warmup_steps: int, max_steps: int, schedule: str) -> Callable[[int], float]:
    """A one-argument function for ``LambdaLR`` (a plain function, so the scheduler state stays picklable-free)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")

    def fn(step: int) -> float:
        return lr_multiplier(step, warmup_steps=warmup_steps, max_steps=max_steps, schedule=schedule)

    return fn
