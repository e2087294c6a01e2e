"""The one per-dim normaliser of the models floor: DINO tokens (D,) and actions (A,) alike.

DINO tokens (random-init and real) have per-dim scales far from 1, and actions come in env units; every model
works on ``(x - mean) / std`` with the statistics of its training data. The statistics are buffers, so they are
saved with the weights and move with ``.to(device)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

MIN_STD = 1e-6  # a constant dim (e.g. a masked-out background patch) must not divide by zero


class Normaliser(nn.Module):
    """Per-dim ``(x - mean) / std`` over the last axis of ``x`` (..., dim); identity until :meth:`set` is called."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        """Dataset statistics, each (dim,); None keeps the current value."""
        if mean is not None:
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        if std is not None:
            self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(MIN_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class TokenNormalised:
    """Mixin for a model with a ``tokens`` :class:`Normaliser`: the token statistics and the (de)normalisation that
    every token model exposes the same way."""

    tokens: Normaliser

    @property
    def token_mean(self) -> torch.Tensor:
        return self.tokens.mean

    @property
    def token_std(self) -> torch.Tensor:
        return self.tokens.std

    def normalise(self, s: torch.Tensor) -> torch.Tensor:
        return self.tokens(s)

    def denormalise(self, s: torch.Tensor) -> torch.Tensor:
        return self.tokens.inverse(s)


def token_stats(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dim mean/std over all leading dims of tokens (..., D) -> ((D,), (D,))."""
    flat = tokens.reshape(-1, tokens.shape[-1]).double()
    return flat.mean(0).float(), flat.std(0).float().clamp_min(MIN_STD)
