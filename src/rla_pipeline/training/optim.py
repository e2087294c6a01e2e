"""The optimizer and mixed-precision choices of ``TrainerConfig``."""
from __future__ import annotations

import torch
import torch.nn as nn

from rla_pipeline.training.config import TrainerConfig


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``TrainerConfig.amp`` on ``device`` (None: full precision)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def make_optimizer(model: nn.Module, config: TrainerConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on weights with ``ndim >= 2`` only (not biases and norms)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError(f"run {config.run_name!r}: the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type == "cuda")
