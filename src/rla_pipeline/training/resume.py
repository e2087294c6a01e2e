"""Whether a run resumes: the config hash a checkpoint must match, and the choice of checkpoint.

A checkpoint is resumed only when its ``config_hash`` equals the hash of :func:`config_fingerprint` (numeric trainer
fields, model class/config/parameter shapes, fixed buffers, loss function, dataset length and content fingerprint);
a checkpoint of another config is moved aside (``checkpoint.supersede``) with a :class:`CheckpointMismatchWarning`.
File format and atomic writes: ``training/checkpoint.py``.
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd
import torch.nn as nn

from rla_pipeline.training import checkpoint as ckpt
from rla_pipeline.training.config import HASHED_FIELDS, CheckpointMismatchWarning, TrainerConfig, TrainResult
from rla_pipeline.utils.hashing import nested_digest

logger = logging.getLogger(__name__)


def dataset_fingerprint(dataset) -> str | None:
    """The dataset's ``fingerprint`` attribute (a digest of its content), or None when it has none.

    It goes into the checkpoint's config hash, so a finished checkpoint is never returned for other data with
    the same number of samples (e.g. features recomputed with other encoder weights).
    """
    fp = getattr(dataset, "fingerprint", None)
    return str(fp() if callable(fp) else fp) if fp is not None else None


def config_fingerprint(config: TrainerConfig, model: nn.Module, loss_fn: Callable, num_samples: int,
                       data_fingerprint: str | None = None) -> dict:
    """Everything a checkpoint must agree with to be resumed (hashed into ``config_hash``)."""
    model_cfg = getattr(model, "config", None)
    # Values the data set before training (token statistics buffers, a frozen RLA inside a world model):
    # other values mean another training, even with identical shapes.
    fixed = list(model.named_buffers()) + [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    buffers = {n: nested_digest(t) for n, t in fixed}
    # Not the initial trainable weights: a resumed run restores them from the checkpoint, whatever it built.
    return {
        "data": data_fingerprint,
        "buffers": buffers,
        "trainer": {f: getattr(config, f) for f in HASHED_FIELDS},
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_config": dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else None,
        "parameters": [[n, list(p.shape), str(p.dtype), p.requires_grad] for n, p in model.named_parameters()],
        "loss_fn": f"{getattr(loss_fn, '__module__', '?')}.{getattr(loss_fn, '__qualname__', type(loss_fn).__name__)}",
        "num_samples": num_samples,
    }


def finished_result(model: nn.Module, state: dict, path: Path) -> TrainResult:
    """The result a complete checkpoint stands for: its weights loaded into ``model``, its history."""
    model.load_state_dict(state["model"])
    logger.info("checkpoint %s is complete (step %d): returning the trained model without training", path, state["step"])
    return TrainResult(model=model.cpu().eval(), history=pd.DataFrame(state["history"]),
                       final_val=dict(state.get("final_val") or {}), resumed_from_step=int(state["step"]))


def find_resumable(config: TrainerConfig, config_hash: str) -> tuple[Path, dict] | None:
    """The checkpoint to resume from, or None. A checkpoint of another config is moved aside with a warning."""
    if not config.checkpoint_dir:
        return None
    found = ckpt.load_latest(config.checkpoint_dir)
    if found is None:
        return None
    path, state = found
    if state.get("config_hash") != config_hash:
        dest = ckpt.supersede(config.checkpoint_dir, str(state.get("config_hash")))
        warnings.warn(
            f"run {config.run_name!r}: checkpoint {path} was written with another config/model "
            f"(hash {state.get('config_hash')} != {config_hash}); moved to {dest}, training from scratch",
            CheckpointMismatchWarning, stacklevel=3,
        )
        return None
    return path, state



def config_hash(config: TrainerConfig, model: nn.Module, loss_fn: Callable, train_dataset) -> str:
    """The hash a checkpoint of this run carries (see :func:`config_fingerprint`)."""
    return ckpt.stable_hash(config_fingerprint(config, model, loss_fn, len(train_dataset),
                                               dataset_fingerprint(train_dataset)))
