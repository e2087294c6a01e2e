"""A small real regression problem for the trainer tests (module level, so spawned DDP workers can unpickle it)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from rla_pipeline.models.registry import register_model
from rla_pipeline.training.trainer import TrainerConfig


@dataclass
class ToyMLPConfig:
    in_dim: int = 4
    hidden: int = 32
    out_dim: int = 1


@register_model("trainer_toy_mlp")
class ToyMLP(nn.Module):
    """x (B, in_dim) -> (B, out_dim). No batchnorm, no dropout (DDP equivalence is exact up to float sums)."""

    config_class = ToyMLPConfig

    def __init__(self, config: ToyMLPConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(config.in_dim, config.hidden), nn.Tanh(),
                                 nn.Linear(config.hidden, config.hidden), nn.Tanh(),
                                 nn.Linear(config.hidden, config.out_dim))

    def forward(self, x):
        return self.net(x)


class RegressionDataset(Dataset):
    """y = sin(2 x0) + 0.5 x1 x2 - x3 (+ small noise); items {"x": (4,), "y": (1,)}."""

    def __init__(self, n: int = 256, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (torch.sin(2 * self.x[:, 0]) + 0.5 * self.x[:, 1] * self.x[:, 2] - self.x[:, 3]).unsqueeze(1)
        self.y = self.y + 0.01 * torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class EpochRecordingDataset(RegressionDataset):
    """Also records ``set_epoch`` calls and tags each item with the epoch it was read in."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __getitem__(self, i):
        return {**super().__getitem__(i), "index": i, "epoch": self.epochs[-1] if self.epochs else -1}


def mse_loss(model, batch):
    pred = model(batch["x"])
    loss = F.mse_loss(pred, batch["y"])
    return loss, {"mae": (pred - batch["y"]).abs().mean().item()}


class NanAfter:
    """loss_fn that turns NaN after ``n`` calls."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, model, batch):
        self.calls += 1
        loss, metrics = mse_loss(model, batch)
        return (loss * float("nan") if self.calls > self.n else loss), metrics


def sleep_callback(step, val_metrics):
    time.sleep(0.02)


def make_model(seed: int = 0) -> ToyMLP:
    torch.manual_seed(seed)
    return ToyMLP(ToyMLPConfig())


def resume_config(checkpoint_dir) -> TrainerConfig:
    """The config of the kill -9 / resume test (shared by the test and its subprocess)."""
    return TrainerConfig(run_name="resume", max_steps=120, batch_size=16, lr=3e-3, warmup_steps=10,
                         weight_decay=0.01, log_every=7, val_every=1000, checkpoint_every=10,
                         checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
                         seed=3, progress=False)
