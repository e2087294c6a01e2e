"""DINO-to-RGB decoder (the paper's stage 1): frozen DINO patch tokens (N, D) of one frame -> that frame in RGB.

The paper trains a separate UNet that maps DINO tokens back to pixels, only to *look at* predictions: world-model
rollouts (predicted tokens) are decoded and compared with the true frames (SSIM, LPIPS). This is the decoding half of
a UNet (there is no image encoder to skip from: the tokens are the only input):

    tokens (B, N, D) -> per-dim normalisation (training statistics) -> Linear D -> C0 per token
    -> grid (B, C0, g, g), g = sqrt(N) -> bilinear resize to the base resolution S / 2**(L-1)
    -> L levels of residual conv blocks, x2 nearest upsampling + conv between levels (C0 -> C1 -> ... -> C_{L-1})
    -> GroupNorm, SiLU, 3x3 conv to RGB (zero-initialised) + the training set's mean image
    -> (B, 3, S, S) in [0, 1] (not clamped while training; :func:`decode_tokens` clamps and rounds)

The output layer starts at zero, so an untrained decoder outputs the mean training image: the baseline its
evaluation compares against; training only has to learn the frame's difference from it.

Decoding predicted tokens (world-model evaluation, WMRL)::

    from rla_pipeline.models.pixel_decoder import decode_tokens
    frames = decode_tokens(decoder, tokens, stats=None)       # tokens (..., N, D) raw DINO scale -> uint8 (..., S, S, 3)
    frames = decode_tokens(decoder, z_norm, stats=(mean, std)) # tokens normalised by another model's (D,) stats

``stats`` says which scale ``tokens`` are in: None for raw DINO tokens (what the feature cache holds and what the
world models' ``decode`` returns); ``(mean, std)`` (each (D,)) when the tokens are normalised as ``(s - mean) / std``
(e.g. a model's internal normalised space): they are mapped back to the raw scale first. The decoder's own
normalisation statistics are buffers of the model (saved with its weights), never passed in.

Torch only (no Kedro). Registered as ``PixelDecoder`` in :mod:`rla_pipeline.models.registry`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
import torch
import torch.nn as nn
import torch.nn.functional as F

from rla_pipeline.models.normalise import Normaliser, TokenNormalised
from rla_pipeline.models.registry import register_model
from rla_pipeline.utils.config import from_dict


@dataclass
class PixelDecoderConfig:
    """Shape of the decoder.

    num_tokens: N patch tokens per frame; must be a square g*g (CLS/register tokens are not in the cache).
    token_dim: D dims per token.
    image_size: S, output height = width in pixels; S / 2**(len(channels)-1) must be a whole number (the base size).
    channels: conv width per resolution level, coarsest first; len(channels) - 1 = number of x2 upsamplings.
    blocks_per_level: residual conv blocks at each level.
    groups: GroupNorm groups (must divide every entry of ``channels``).
    l1_weight, mse_weight: pixel loss weights (on [0, 1] RGB).
    """

    num_tokens: int = 36
    token_dim: int = 384
    image_size: int = 64
    channels: list[int] = field(default_factory=lambda: [64, 32, 16, 8])
    blocks_per_level: int = 1
    groups: int = 4
    l1_weight: float = 1.0
    mse_weight: float = 1.0

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]
        g = math.isqrt(self.num_tokens)
        ups = len(self.channels) - 1
        checks = [
            (self.num_tokens >= 1 and g * g == self.num_tokens, f"num_tokens must be a square (g x g grid), got {self.num_tokens}"),
            (self.token_dim >= 1, "token_dim must be >= 1"),
            (len(self.channels) >= 1 and min(self.channels) >= 1, "channels must be a non-empty list of widths >= 1"),
            (self.image_size >= 1 and self.image_size % (2 ** ups) == 0,
             f"image_size {self.image_size} must be divisible by 2**{ups} (one x2 upsampling per extra channels entry)"),
            (self.blocks_per_level >= 0, "blocks_per_level must be >= 0"),
            (self.groups >= 1 and all(c % self.groups == 0 for c in self.channels),
             f"groups {self.groups} must divide every channel width {self.channels}"),
            (self.l1_weight >= 0 and self.mse_weight >= 0 and self.l1_weight + self.mse_weight > 0,
             "l1_weight and mse_weight must be >= 0, not both 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PixelDecoderConfig: {message}")

    @property
    def grid(self) -> int:
        """g: side of the token grid."""
        return math.isqrt(self.num_tokens)

    @property
    def base_size(self) -> int:
        """Resolution of the first conv level: image_size / 2**(levels - 1)."""
        return self.image_size // 2 ** (len(self.channels) - 1)

    @classmethod
    def from_dict(cls, d: dict | None) -> "PixelDecoderConfig":
        return from_dict(cls, d, where="pixel_decoder.model")


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))): two 3x3 convs at a fixed width, second one zero-initialised."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        # zero init: each block starts as the identity, so deeper configs train as stably as shallow ones
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class Upsample(nn.Module):
    """x2 nearest-neighbour upsampling then a 3x3 conv to the next level's width (no checkerboard artefacts)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    # CUDA's nearest upsampling refuses tensors of INT_MAX elements or more (seen on an H200 at the paper's 512 px,
    # batch 64: [64, 128, 512, 512]); such batches are upsampled in slices. Same result, sliced or not.
    max_elements = 2**31 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, 2H, 2W)
        per_sample = 4 * x[0].numel()
        if x.shape[0] * per_sample <= self.max_elements:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        step = max(1, self.max_elements // per_sample)
        return torch.cat([self.conv(F.interpolate(part, scale_factor=2.0, mode="nearest"))
                          for part in x.split(step)])


@register_model
class PixelDecoder(TokenNormalised, nn.Module):
    """DINO tokens (B, N, D) at raw scale -> RGB (B, 3, S, S) in [0, 1]. See the module docstring."""

    config_class = PixelDecoderConfig

    def __init__(self, config: PixelDecoderConfig) -> None:
        super().__init__()
        self.config = c = config
        S, C0 = c.image_size, c.channels[0]
        # Set from training data (set_stats) and saved with the weights; defaults leave tokens and output unchanged.
        self.tokens = Normaliser(c.token_dim)
        self.register_buffer("mean_image", torch.full((3, S, S), 0.5))
        self.token_proj = nn.Linear(c.token_dim, C0)
        levels = []
        for i, width in enumerate(c.channels):
            blocks: list[nn.Module] = [ResBlock(width, c.groups) for _ in range(c.blocks_per_level)]
            if i + 1 < len(c.channels):
                blocks.append(Upsample(width, c.channels[i + 1]))
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.ModuleList(levels)
        self.out_norm = nn.GroupNorm(c.groups, c.channels[-1])
        self.to_rgb = nn.Conv2d(c.channels[-1], 3, 3, padding=1)
        nn.init.zeros_(self.to_rgb.weight)  # start exactly at the mean image (the evaluation's baseline)
        nn.init.zeros_(self.to_rgb.bias)

    def set_stats(self, token_mean: torch.Tensor, token_std: torch.Tensor, mean_image: torch.Tensor) -> None:
        """Training-set statistics: per-dim token mean/std (D,) and the mean frame (3, S, S) in [0, 1]."""
        self.tokens.set(token_mean, token_std)
        self.mean_image.copy_(mean_image.float())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        c = self.config
        B, N, D = tokens.shape
        if (N, D) != (c.num_tokens, c.token_dim):
            raise ValueError(f"PixelDecoder expects tokens (B, {c.num_tokens}, {c.token_dim}), got {tuple(tokens.shape)}")
        x = self.normalise(tokens.float())  # (B, N, D)
        x = self.token_proj(x)  # (B, N, C0)
        g = c.grid
        x = x.transpose(1, 2).reshape(B, -1, g, g)  # (B, C0, g, g): tokens are stored row-major over the patch grid
        if g != c.base_size:
            x = F.interpolate(x, size=(c.base_size, c.base_size), mode="bilinear", align_corners=False)
        for level in self.levels:
            x = level(x)  # (B, C_i, s, s) -> (B, C_{i+1}, 2s, 2s) (the last level keeps its size)
        x = self.to_rgb(F.silu(self.out_norm(x)))  # (B, 3, S, S)
        return x + self.mean_image


def pixel_decoder_loss(model: PixelDecoder, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Trainer loss: L1 + MSE between decoded and true frames (both [0, 1]).

    batch: ``{"tokens": (B, N, D), "image": (B, 3, S, S) float in [0, 1]}``. Metrics: l1, mse, psnr (of the batch MSE).
    """
    pred = model(batch["tokens"])
    target = batch["image"].float()
    l1 = (pred - target).abs().mean()
    mse = ((pred - target) ** 2).mean()
    cfg = model.config
    loss = cfg.l1_weight * l1 + cfg.mse_weight * mse
    psnr = -10.0 * torch.log10(mse.detach().clamp_min(1e-10))
    return loss, {"l1": l1.detach(), "mse": mse.detach(), "psnr": psnr}


@torch.no_grad()
def decode_tokens(model: PixelDecoder, tokens, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
                  batch_size: int = 64) -> "torch.Tensor":
    """Decode DINO tokens to images: tokens (..., N, D) -> uint8 (..., S, S, 3) on the CPU.

    tokens: a torch tensor or numpy array (any float dtype; fp16 cache entries are fine), any leading dims
        (e.g. (B, H, N, D) for B rollouts over H horizons).
    stats: None when ``tokens`` are raw DINO tokens; ``(mean, std)`` (each (D,)) when they are normalised as
        ``(s - mean) / std``: they are mapped back with ``s = tokens * std + mean`` before decoding.
    batch_size: frames per forward pass (bounds memory on long rollouts).
    Runs on the model's device in eval mode (restoring the previous mode); output clamped to [0, 1] and rounded.
    """
    t = torch.as_tensor(tokens)
    lead, (N, D) = t.shape[:-2], t.shape[-2:]
    flat = t.reshape(-1, N, D)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, flat.shape[0], batch_size):
            x = flat[i : i + batch_size].to(device, torch.float32)
            if stats is not None:
                mean, std = (torch.as_tensor(s, dtype=torch.float32, device=device) for s in stats)
                x = x * std + mean
            rgb = model(x).clamp(0.0, 1.0)  # (b, 3, S, S)
            out.append((rgb * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())  # (b, S, S, 3)
        S = model.config.image_size
        frames = torch.cat(out) if out else torch.empty(0, S, S, 3, dtype=torch.uint8)
    finally:
        model.train(was_training)
    return frames.reshape(*lead, S, S, 3)


def frames_to_images(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float (T, 3, image_size, image_size) in [0, 1] (antialiased bilinear resize)."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0.0, 1.0)


