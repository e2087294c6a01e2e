"""What a training run is configured with and what it returns; the errors it raises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch.nn as nn

from rla_pipeline.training.schedules import SCHEDULES
from rla_pipeline.utils.config import from_dict

AMP_MODES = ("auto", "off", "bf16", "fp16")
# Fields of TrainerConfig that change the numbers a run produces; the others (names, paths, logging and
# checkpoint cadence, workers, device, process count) may change between a run and its resume.
HASHED_FIELDS = ("max_steps", "batch_size", "lr", "weight_decay", "betas", "warmup_steps", "schedule",
                 "grad_clip", "amp", "seed")


@dataclass
class TrainerConfig:
    """How to train; one block per model under its pipeline's parameters (e.g. ``rla.trainer``)."""

    run_name: str  # MLflow child-run name and progress-bar label
    max_steps: int  # optimizer updates in total
    batch_size: int  # GLOBAL batch (split over DDP processes, so results do not depend on the device count)
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # decoupled weight decay, applied to weights with ndim >= 2 only (not biases/norms)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warmup updates
    schedule: str = "cosine"  # "cosine" (to 0 at max_steps) | "constant" (after warmup)
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU) | "off" | "bf16" | "fp16" (with GradScaler)
    log_every: int = 10  # train-metric rows (window means) in the history and MLflow
    val_every: int = 100  # validation + callbacks (also at the last step)
    checkpoint_every: int = 100  # checkpoint cadence (also at the last step); needs checkpoint_dir
    checkpoint_dir: str | None = None  # None = no checkpoints, no resume
    seed: int = 0  # seeds RNGs and the data order
    num_workers: int = 0  # DataLoader worker processes
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" (DDP ranks use cuda:LOCAL_RANK)
    num_processes: int = 1  # > 1: DDP workers launched here (ignored under torchrun, which sets the world)
    progress: bool = True  # progress of the steps on rank 0: tqdm bar on a terminal, else log lines (utils/progress.py)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas must be two numbers in [0, 1)"),
            (0 <= self.warmup_steps <= self.max_steps, "warmup_steps must be in [0, max_steps]"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0 or None"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}"),
            (min(self.log_every, self.val_every, self.checkpoint_every) >= 1, "*_every must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.num_processes >= 1, "num_processes must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainerConfig({self.run_name!r}): {message}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerConfig":
        return from_dict(cls, data, where="TrainerConfig")


@dataclass
class TrainResult:
    """``model``: the trained model (unwrapped, CPU, eval mode; the same object that was passed in).
    ``history``: one row per log/validation event: ``step``, ``split`` ("train"|"val"), then the metrics.
    ``final_val``: metrics of the last validation ({} without a val set).
    ``resumed_from_step``: the checkpoint step this call started from (``max_steps`` when the checkpoint
    was already complete and nothing was trained), None for a fresh run."""

    model: nn.Module
    history: pd.DataFrame
    final_val: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int | None = None


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the message names the run and the step."""


class CheckpointMismatchWarning(UserWarning):
    """A checkpoint of another config/model was found and set aside; training started fresh."""

