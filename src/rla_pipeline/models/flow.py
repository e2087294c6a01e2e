"""Flow matching with the paper's schedule, and an Euler sampler.

Interpolation (t = 0 is data x0, t = 1 is noise n):
    x_t = (1 - t) x0 + (sigma_min + (1 - sigma_min) t) n
The velocity is its time derivative, dx_t/dt = (1 - sigma_min) n - x0, which is the regression target.
Sampling integrates dx/dt = v(x, t) from t = 1 (x = noise) down to t = 0 (data) with Euler steps: x <- x - dt * v.
Training times t ~ logit-normal(mean, std): t = sigmoid(u), u ~ N(mean, std).
"""
from __future__ import annotations

from typing import Callable

import torch

SIGMA_MIN = 1e-5


def sample_time(batch: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Logit-normal flow times (batch,) in (0, 1), on ``device`` (drawn on the generator's device when one is given)."""
    u = torch.randn(batch, generator=generator, device=generator.device if generator is not None else device)
    return torch.sigmoid(u.to(device) * std + mean)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sigma_min: float = SIGMA_MIN
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """x0, noise (B, ...), t (B,) -> (x_t (B, ...), velocity target (B, ...))."""
    tb = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    x_t = (1 - tb) * x0 + (sigma_min + (1 - sigma_min) * tb) * noise
    target = (1 - sigma_min) * noise - x0
    return x_t, target


def flow_matching_loss(velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                       generator: torch.Generator | None = None, sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """Mean squared error between velocity_fn(x_t, t) and the target velocity, for data x0 (B, ...)."""
    t = sample_time(x0.shape[0], generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(x0.device) \
        if generator is not None else torch.randn_like(x0)
    x_t, target = interpolate(x0, noise, t, sigma_min)
    return (velocity_fn(x_t, t) - target).pow(2).mean()


@torch.no_grad()
def euler_sample(velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_noise: torch.Tensor,
                 steps: int = 30) -> torch.Tensor:
    """Integrate from t = 1 (x_noise (B, ...)) to t = 0 in ``steps`` Euler steps -> samples (B, ...)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = x_noise
    ts = torch.linspace(1.0, 0.0, steps + 1, device=x.device)
    for i in range(steps):
        t = ts[i].expand(x.shape[0])
        dt = ts[i] - ts[i + 1]
        x = x - dt * velocity_fn(x, t)
    return x
