"""The study's settings: search space (latent shapes "KxD", learning rate), budget, pruning, heartbeat."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from rla_pipeline.utils.config import from_dict

_SHAPE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass
class TuneConfig:
    """The search space, budget and pruning of the RLA shape study (``params:tune``)."""

    study_name: str = "rla_latent_shape"  # one study per name in the storage; workers join it by name
    storage: str | None = None  # RDB URL; None: the catalog's optuna_storage file (RLA_OPTUNA_STORAGE env wins)
    n_trials: int = 8  # total trials that end COMPLETE or PRUNED, over all workers and resumes
    shapes: list[str] = field(default_factory=lambda: ["4x8", "8x8", "16x16", "32x64"])  # "KxD" latent shapes
    lr_low: float = 1e-4  # learning rate, sampled log-uniformly in [lr_low, lr_high]
    lr_high: float = 3e-3
    max_steps: int = 300  # trainer steps per trial
    val_every: int = 50  # validation (and pruning report) every this many steps
    batch_size: int | None = None  # None: the rla trainer's batch size
    metric: str = "l1"  # validation metric minimised (held-out reconstruction token L1)
    pruner_startup_trials: int = 2  # MedianPruner: trials finished before any pruning
    pruner_warmup_steps: int = 0  # MedianPruner: steps inside a trial before it may be pruned
    seed: int = 0  # sampler seed (each worker process offsets it by its pid so workers explore differently)
    heartbeat_interval: int = 10  # s; a RUNNING trial without heartbeat for 3 intervals is failed and re-queued
    max_retry: int = 1  # re-queues of a trial whose worker died
    timeout_s: float | None = None  # per-worker wall-clock limit

    @classmethod
    def from_dict(cls, d: "dict | TuneConfig | None") -> "TuneConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="tune")

    def __post_init__(self) -> None:
        self.shapes = [str(s) for s in self.shapes]
        if not self.shapes:
            raise ValueError("tune.shapes must list at least one 'KxD' shape")
        for s in self.shapes:
            parse_shape(s)
        if not (0 < self.lr_low <= self.lr_high):
            raise ValueError(f"tune.lr_low/lr_high must satisfy 0 < low <= high, got {self.lr_low}, {self.lr_high}")
        for name in ("n_trials", "max_steps", "val_every", "heartbeat_interval"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"tune.{name} must be > 0, got {getattr(self, name)}")


def parse_shape(shape: str) -> tuple[int, int]:
    """"16x32" -> (16, 32) (K query tokens, d dims)."""
    m = _SHAPE_RE.match(str(shape))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"latent shape {shape!r} is not of the form 'KxD' with K, D > 0")
    return int(m.group(1)), int(m.group(2))
