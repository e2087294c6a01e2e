"""Image-quality metrics for decoded frames: PSNR, SSIM (torch, no extra packages) and LPIPS from local weights only.

Images are float tensors in [0, 1], (B, 3, H, W) (or (3, H, W) for one image); uint8 inputs are scaled by 1/255.
Every function returns one value per image, shape (B,); tables average those.

- :func:`psnr`: ``10 log10(1 / MSE)`` per image; identical images give ``inf`` unless ``max_db`` caps it.
- :func:`ssim`: Wang et al. (2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
  (co)variances, only windows that lie inside the image ("valid"), averaged over pixels and channels. This is what
  ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1, gaussian_weights=True,
  use_sample_covariance=False)`` computes (skimage crops the border its padded filter touched; the valid convolution
  here reads exactly the windows it keeps). Images must be at least 11 px on each side.
- :class:`LPIPS` (AlexNet variant, Zhang et al. 2018): needs two local files that the user provides: the AlexNet
  backbone (torchvision ``alexnet`` state dict) and the LPIPS linear heads (the ``lpips`` package's ``alex.pth``,
  keys ``lin0.model.1.weight`` .. ``lin4.model.1.weight``). Nothing is downloaded: :func:`load_lpips` returns
  ``(None, reason)`` without them, and tables must then report LPIPS as unavailable (NaN plus that reason), never a
  stand-in number.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def as_images(x) -> torch.Tensor:
    """Float (B, C, H, W) in [0, 1] from a tensor/array (B, C, H, W) or (C, H, W); uint8 is divided by 255."""
    t = torch.as_tensor(x)
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W) or (C, H, W), got shape {tuple(t.shape)}")
    return t


def hwc_to_images(frames) -> torch.Tensor:
    """uint8/float frames (..., H, W, 3) (the layout of videos and :func:`decode_tokens`) -> float (B, 3, H, W)."""
    t = torch.as_tensor(frames)
    t = t.reshape(-1, *t.shape[-3:]).permute(0, 3, 1, 2)
    return as_images(t)


def mse(a, b) -> torch.Tensor:
    """Per-image mean squared error: (B,)."""
    a, b = _pair(a, b)
    return ((a - b) ** 2).flatten(1).mean(1)


def psnr(a, b, max_db: float | None = None) -> torch.Tensor:
    """Per-image PSNR in dB for data range 1: (B,). Identical images -> inf (or ``max_db`` when given)."""
    err = mse(a, b).double()
    out = torch.where(err > 0, -10.0 * torch.log10(err.clamp_min(1e-300)), torch.full_like(err, float("inf")))
    if max_db is not None:
        out = out.clamp(max=max_db)
    return out.float()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian (size, size), float64."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(ax**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a, b, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-image SSIM (B,) of images in [0, 1] (see the module docstring for the exact definition)."""
    a, b = _pair(a, b)
    B, C, H, W = a.shape
    if min(H, W) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} px, got {H}x{W}")
    a, b = a.double(), b.double()  # the variance terms subtract nearly equal numbers
    w = gaussian_window(window, sigma).to(a.device)[None, None].expand(C, 1, window, window).contiguous()

    def filt(x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H-window+1, W-window+1)
        return F.conv2d(x, w, groups=C)

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K * data_range)**2 with data_range 1
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).float()


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = as_images(a), as_images(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


# ------------------------------------------------------------------------------------------------ LPIPS
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
_ALEX_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))  # relu1 .. relu5 of torchvision's alexnet.features
# LPIPS' input scaling layer (constants of the reference implementation), applied to images in [-1, 1]
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """LPIPS (AlexNet) distance: ``forward(a, b)`` on images in [0, 1] -> (B,), 0 for identical images.

    Build it with :func:`load_lpips` (weights from local files); the backbone and heads are frozen.
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import alexnet

        self.features = alexnet(weights=None).features  # architecture only: weights come from the user's file
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _ALEX_CHANNELS)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x * 2.0 - 1.0) - self.shift) / self.scale
        out = []
        for lo, hi in _ALEX_SLICES:
            for layer in self.features[lo:hi]:
                x = layer(x)
            out.append(x)
        return out

    @torch.no_grad()
    def forward(self, a, b) -> torch.Tensor:
        a, b = _pair(a, b)
        dev = self.shift.device
        total = torch.zeros(a.shape[0], device=dev)
        for fa, fb, lin in zip(self._stages(a.to(dev)), self._stages(b.to(dev)), self.lins):
            # unit-normalise each spatial feature vector over channels, then a learned weighting per channel
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total.cpu()


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lpips(backbone_weights: str | os.PathLike | None, linear_weights: str | os.PathLike | None
               ) -> tuple[LPIPS | None, str]:
    """-> ``(LPIPS model, "available")`` or ``(None, reason)`` (no file given, file missing, weights that do not fit).

    backbone_weights: torchvision ``alexnet`` state dict (``features.*`` keys are used; ``.pth`` or ``.safetensors``).
    linear_weights: the LPIPS heads: keys ``lin{i}.model.1.weight`` (the ``lpips`` package) or ``lins.{i}.weight``.
    """
    if not backbone_weights or not linear_weights:
        return None, "unavailable: no local LPIPS weights given (backbone_weights and linear_weights); nothing is downloaded"
    paths = [Path(backbone_weights), Path(linear_weights)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        return None, f"unavailable: weight file(s) not found: {missing}"
    model = LPIPS()
    try:
        backbone = _read_state(paths[0])
        feats = {k[len("features."):]: v for k, v in backbone.items() if k.startswith("features.")}
        model.features.load_state_dict(feats, strict=True)
        heads = _read_state(paths[1])
        lins = {}
        for i in range(len(_ALEX_CHANNELS)):
            key = next((k for k in (f"lin{i}.model.1.weight", f"lins.{i}.weight") if k in heads), None)
            if key is None:
                raise KeyError(f"no weight for head {i} in {paths[1]}")
            lins[f"{i}.weight"] = heads[key]
        model.lins.load_state_dict(lins, strict=True)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        return None, f"unavailable: LPIPS weights do not load ({type(exc).__name__}: {exc})"
    return model, "available"
