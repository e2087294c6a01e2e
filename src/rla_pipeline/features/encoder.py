"""Frozen DINO encoder (timm): RGB frames -> patch tokens (CLS and register tokens dropped).

Models: DINOv2 (``vit_small_patch14_dinov2.lvd142m`` ... ``vit_giant_patch14_dinov2.lvd142m``, with registers
``vit_small_patch14_reg4_dinov2.lvd142m``) and DINOv3 (``vit_small_patch16_dinov3.lvd1689m`` ...
``vit_large_patch16_dinov3.lvd1689m``). The model is built at ``image_size`` (timm ``img_size=``, dynamic position
embedding), so it gives ``(image_size // patch)**2`` tokens of ``embed_dim`` each.

Weights (``EncoderConfig.weights``):
- ``"pretrained"``: from the local Hugging Face cache, else from the hub (these CPU machines cannot reach it);
- a local file (``.safetensors``, or a ``.pth``/``.bin`` checkpoint read with ``torch.load(weights_only=True)``),
  timm or original DINO layout (timm's ``checkpoint_filter_fn`` converts it and resamples the position embedding);
- ``"random"``: seeded random init (same seed -> same weights). Only good for tests and plumbing.

When pretrained weights cannot be had, ``allow_random_fallback`` decides: False (paper scale) raises
:class:`WeightsUnavailableError` saying how to provide a file; True (small default) logs a loud warning, falls back to
seeded random init and tags the run ``encoder_weights=random-init``. The tag also enters the cache key and the
feature manifest (``weights_tag``), so every later table can say which weights made its features.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F

from rla_pipeline import tracking
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import sha256_file, state_dict_digest
from rla_pipeline.utils.images import IMAGENET_MEAN, IMAGENET_STD
from rla_pipeline.utils.seeding import resolve_device

logger = logging.getLogger(__name__)

# Bump when the preprocessing below changes: it is part of every cache key.
PREPROCESS_VERSION = "rgb-bilinear-antialias-imagenet-v1"

RANDOM_BANNER = "!" * 100


class WeightsUnavailableError(RuntimeError):
    """Pretrained DINO weights could not be loaded and random init is not allowed."""


@dataclass
class EncoderConfig:
    """How frames become DINO patch tokens.

    model_name: timm model name (DINOv2 / DINOv3 families, see module docstring).
    image_size: square input size in pixels; tokens = (image_size // patch_size)**2. Must be a multiple of the patch.
    weights: "pretrained" | "random" | path to a local ``.safetensors`` / ``.pth`` file.
    allow_random_fallback: when "pretrained" cannot be loaded: True -> loud warning + seeded random init;
        False -> raise WeightsUnavailableError.
    mask_background: multiply RGB by the episode's foreground mask before encoding (when the episode has masks).
    device: "auto" | "cpu" | "cuda" | "cuda:N" (under torchrun, "auto"/"cuda" pick cuda:LOCAL_RANK).
    batch_size: frames per forward pass.
    seed: seed of the random init (weights="random" or the fallback).
    amp: "auto" (bf16 autocast on CUDA, fp32 on CPU) | "off" | "bf16".
    """

    model_name: str = "vit_small_patch14_dinov2.lvd142m"
    image_size: int = 112
    weights: str = "pretrained"
    allow_random_fallback: bool = True
    mask_background: bool = True
    device: str = "auto"
    batch_size: int = 64
    seed: int = 0
    amp: str = "auto"

    def __post_init__(self) -> None:
        if "dinov2" not in self.model_name and "dinov3" not in self.model_name:
            logger.warning("encoder %s is not a DINOv2/DINOv3 model; continuing anyway", self.model_name)
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.amp not in ("auto", "off", "bf16"):
            raise ValueError(f"amp must be auto|off|bf16, got {self.amp!r}")
        if self.weights not in ("pretrained", "random") and not str(self.weights).strip():
            raise ValueError("weights must be 'pretrained', 'random' or a file path")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "EncoderConfig":
        return from_dict(cls, d, where="features.encoder")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the HF endpoint, so an offline machine fails in seconds instead of a minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely: safetensors, or torch.load(weights_only=True) (no pickled code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def _load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Convert (original DINO layout, position-embedding size) with timm's filter, then load strictly-ish."""
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # A headless model (num_classes=0) legitimately ignores head.* keys.
    missing = [k for k in missing if not k.startswith("head")]
    unexpected = [k for k in unexpected if not k.startswith("head")]
    if missing:
        raise ValueError(f"{source}: checkpoint misses {len(missing)} weights of the model, e.g. {missing[:5]}")
    if unexpected:
        logger.warning("%s: ignored %d unexpected keys, e.g. %s", source, len(unexpected), unexpected[:5])




class DinoEncoder:
    """A frozen timm DINO ViT that maps uint8 frames (T,H,W,3) to patch tokens (T,N,D).

    Attributes: ``num_tokens`` (N), ``token_dim`` (D), ``patch_size``, ``weights_tag``
    ("pretrained" | "file:<sha12>" | "random-init"), ``weights_digest`` (sha256 of the loaded weights),
    ``calls`` (number of forward passes, handy to check that a cached re-run does no work).
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        import timm

        self.cfg = cfg
        self.device = self._pick_device(cfg.device)
        kwargs = dict(img_size=cfg.image_size, num_classes=0, dynamic_img_size=True)
        self.model, self.weights_tag = self._build(timm, kwargs)
        self.model.eval().requires_grad_(False).to(self.device)
        self.patch_size = int(self.model.patch_embed.patch_size[0])
        if cfg.image_size % self.patch_size:
            raise ValueError(
                f"image_size {cfg.image_size} is not a multiple of the patch size {self.patch_size} of {cfg.model_name}"
            )
        self.num_prefix_tokens = int(self.model.num_prefix_tokens)  # CLS + registers, dropped from the output
        self.num_tokens = (cfg.image_size // self.patch_size) ** 2
        self.token_dim = int(self.model.embed_dim)
        self.weights_digest = state_dict_digest(self.model)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        # Fold /255 and normalisation into one affine map: x_norm = x_uint8 * scale + shift.
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std
        self.calls = 0
        tracking.set_tags({"encoder_weights": self.weights_tag, "encoder_model": cfg.model_name})

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _pick_device(device: str) -> torch.device:
        dev = resolve_device(device)
        local_rank = os.environ.get("LOCAL_RANK")
        if dev.type == "cuda" and dev.index is None and local_rank is not None:
            dev = torch.device(f"cuda:{int(local_rank)}")
        return dev

    def _random(self, timm, kwargs) -> torch.nn.Module:
        # A private RNG scope: the init is a function of the seed only, and the caller's RNG state is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            return timm.create_model(self.cfg.model_name, pretrained=False, **kwargs)

    def _pretrained(self, timm, kwargs) -> torch.nn.Module:
        model = timm.create_model(self.cfg.model_name, pretrained=False, **kwargs)
        hub_id = (model.pretrained_cfg or {}).get("hf_hub_id")
        if hub_id:
            from huggingface_hub import hf_hub_download

            for filename in ("model.safetensors", "pytorch_model.bin"):
                try:
                    path = hf_hub_download(hub_id, filename, local_files_only=True)
                except Exception:
                    continue
                _load_into(model, _read_state_dict(Path(path)), f"HF cache {hub_id}/{filename}")
                logger.info("loaded pretrained %s from the local HF cache (%s)", self.cfg.model_name, path)
                return model
        if not _hub_reachable():
            raise WeightsUnavailableError(f"the model hub is unreachable and {hub_id or self.cfg.model_name} is not in the local HF cache")
        try:
            return timm.create_model(self.cfg.model_name, pretrained=True, **kwargs)
        except Exception as exc:  # network error, missing file, auth...
            raise WeightsUnavailableError(f"download of {self.cfg.model_name} failed: {exc}") from exc

    def _build(self, timm, kwargs) -> tuple[torch.nn.Module, str]:
        w = self.cfg.weights
        if w == "random":
            return self._random(timm, kwargs), "random-init"
        if w != "pretrained":
            path = Path(w).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"features.encoder.weights: {path} is not a file")
            model = timm.create_model(self.cfg.model_name, pretrained=False, **kwargs)
            _load_into(model, _read_state_dict(path), str(path))
            return model, f"file:{sha256_file(path)[:12]}"
        try:
            return self._pretrained(timm, kwargs), "pretrained"
        except WeightsUnavailableError as exc:
            how = (
                f"Pretrained weights for {self.cfg.model_name} are unavailable ({exc}). Provide them with "
                f"`features.encoder.weights: /path/to/model.safetensors` (timm or original DINO layout), or "
                f"pre-populate the Hugging Face cache (HF_HOME) with the model's files on a machine with internet "
                f"(e.g. `huggingface-cli download timm/{self.cfg.model_name}`) and copy it here."
            )
            if not self.cfg.allow_random_fallback:
                raise WeightsUnavailableError(how + " Random init is disabled (allow_random_fallback: false).") from exc
            logger.warning(
                "\n%s\n%s\n  USING RANDOMLY INITIALISED %s WEIGHTS (seed %d) — FEATURES ARE NOT DINO FEATURES.\n"
                "  Every result downstream is tagged encoder_weights=random-init.\n  %s\n%s",
                RANDOM_BANNER, RANDOM_BANNER, self.cfg.model_name, self.cfg.seed, how, RANDOM_BANNER,
            )
            return self._random(timm, kwargs), "random-init"

    # ------------------------------------------------------------------ inference
    def describe(self) -> dict[str, Any]:
        """Everything that determines the tokens (besides the frames): goes into the cache key."""
        return {
            "encoder": self.cfg.model_name,
            "weights_tag": self.weights_tag,
            "weights_digest": self.weights_digest,
            "image_size": self.cfg.image_size,
            "mask_background": self.cfg.mask_background,
            "preprocess": PREPROCESS_VERSION,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        }

    def _autocast(self):
        use_bf16 = self.cfg.amp == "bf16" or (self.cfg.amp == "auto" and self.device.type == "cuda")
        if use_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    @torch.inference_mode()
    def encode_batch(self, frames: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """One forward pass. frames uint8 (B,H,W,3), masks bool (B,H,W) | None -> float32 (B,N,D) on CPU."""
        x = torch.as_tensor(frames).to(self.device, non_blocking=True)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be (B,H,W,3) uint8, got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float()  # (B,3,H,W) in [0,255]
        if masks is not None and self.cfg.mask_background:
            m = torch.as_tensor(masks).to(self.device)
            x = x * m.unsqueeze(1).to(x.dtype)  # background -> black, as the paper does before DINO
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x * self._scale + self._shift
        with self._autocast():
            out = self.model.forward_features(x)  # (B, prefix + N, D)
        self.calls += 1
        tokens = out[:, self.num_prefix_tokens :, :]  # (B, N, D): patch tokens only
        if tokens.shape[1] != self.num_tokens:
            raise RuntimeError(f"expected {self.num_tokens} patch tokens, model gave {tokens.shape[1]}")
        return tokens.float().cpu()

    def encode(self, frames: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """frames uint8 (T,H,W,3), masks bool (T,H,W) | None -> float32 (T,N,D), in batches of ``batch_size``."""
        bs = self.cfg.batch_size
        outs = [
            self.encode_batch(frames[i : i + bs], None if masks is None else masks[i : i + bs])
            for i in range(0, len(frames), bs)
        ]
        if not outs:
            return torch.zeros(0, self.num_tokens, self.token_dim)
        return torch.cat(outs, 0)
