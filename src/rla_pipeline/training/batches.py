"""Batches on their way through the trainer: moved to the device, counted, and the default validation over them."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts/lists/tuples moved to ``device``; other values untouched."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for v in batch:
            n = _batch_len(v)
            if n:
                return n
    return 0


class DeviceBatches:
    """Iterable over ``loader`` yielding batches already on ``device`` (what ``val_fn`` receives)."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self):
        for batch in self.loader:
            yield move_to(batch, self.device)

    def __len__(self) -> int:
        return len(self.loader)


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    """``loss_fn``'s metrics as plain floats (tensors averaged)."""
    return {str(k): float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in (metrics or {}).items()}


def mean_loss_metrics(model: nn.Module, loss_fn: Callable, batches: Iterable, autocast) -> dict[str, float]:
    """Default validation: ``loss`` and ``loss_fn``'s metrics, averaged over the val set weighted by batch size."""
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        n = max(1, _batch_len(batch))
        with autocast():
            loss, metrics = loss_fn(model, batch)
        row = {"loss": float(loss.detach().float()), **floats(metrics)}
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    return {k: v / count for k, v in sums.items()} if count else {}
