"""What the trainer logs to MLflow (through ``rla_pipeline.tracking``, a no-op without an active run).

A child run per training: params ``trainer.*`` / ``model.*``, tag ``trainer.config_hash``, metrics ``<split>/<name>``
per history row, and the final weights as the artifact ``weights/model.safetensors``.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch.nn as nn

from rla_pipeline import tracking
from rla_pipeline.training.config import TrainerConfig
from rla_pipeline.training.model_io import model_to_tensors


def log_weights(model: nn.Module, artifact_path: str = "weights") -> None:
    """Log the model's state dict as ``<artifact_path>/model.safetensors`` to the active MLflow run."""
    if not tracking.active():
        return
    from safetensors.torch import save_file

    tensors, aliases = model_to_tensors(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(tensors, str(path), metadata={"class": type(model).__qualname__, "aliases": str(aliases)})
        tracking.log_artifact(str(path), artifact_path=artifact_path)


def log_params(config: TrainerConfig, model: nn.Module, config_hash: str, world_size: int) -> None:
    params = {f"trainer.{k}": v for k, v in dataclasses.asdict(config).items()}
    model_cfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(model_cfg):
        params.update({f"model.{k}": v for k, v in dataclasses.asdict(model_cfg).items()})
    params["model.class"] = type(model).__qualname__
    params["model.num_parameters"] = sum(p.numel() for p in model.parameters())
    params["trainer.world_size"] = world_size
    tracking.log_params(params)
    tracking.set_tags({"trainer.config_hash": config_hash})


def log_history_row(row: dict[str, Any]) -> None:
    split = row["split"]
    tracking.log_metrics({f"{split}/{k}": v for k, v in row.items() if k not in ("step", "split")}, step=row["step"])
