"""Whether a run resumes: the key a checkpoint must match, and the choice of checkpoint.

A checkpoint is reused (resumed, or returned as finished) only when its ``config_hash`` equals the hash of
:func:`config_fingerprint`, whose parts are everything that shapes the result:

    data     the dataset's content fingerprint and length
    model    class, init config, parameter names/shapes/dtypes, fixed buffers (token statistics, a frozen RLA)
    trainer  the numeric trainer fields (``HASHED_FIELDS``: steps, batch, lr, schedule, seed, ...)
    loss     the loss function's *settings*: a partial's keywords, a loss object's attributes, closure values
    sources  a digest of every project source file the model, the loss and ``training/`` import (transitively)

A checkpoint of another key is moved aside (``checkpoint.supersede``) with a :class:`CheckpointMismatchWarning`
that names the parts (and source files) that changed, read from ``key.json`` beside the checkpoints. The key holds
no ``id()``, memory address or absolute path, so the same inputs give the same key in any process or clone.
File format and atomic writes: ``training/checkpoint.py``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd
import torch.nn as nn

from rla_pipeline.training import checkpoint as ckpt
from rla_pipeline.training.config import HASHED_FIELDS, CheckpointMismatchWarning, TrainerConfig, TrainResult
from rla_pipeline.utils.atomic import atomic_path
from rla_pipeline.utils.hashing import canonical, nested_digest, source_digests

logger = logging.getLogger(__name__)

KEY_FILE = "key.json"  # beside last.pt: the parts of the key the checkpoints there were written with
KEY_PARTS = ("data", "model", "trainer", "loss", "sources")
TRAINING_PACKAGE = "rla_pipeline.training.trainer"  # its import closure is the whole training loop
# Parts of the key per config hash computed in this process, so find_resumable can write/compare key.json
# without changing its callers' signature (bounded: one entry per distinct run config).
_PARTS: dict[str, dict] = {}


def dataset_fingerprint(dataset) -> str | None:
    """The dataset's ``fingerprint`` attribute (a digest of its content), or None when it has none.

    It goes into the checkpoint's config hash, so a finished checkpoint is never returned for other data with
    the same number of samples (e.g. features recomputed with other encoder weights).
    """
    fp = getattr(dataset, "fingerprint", None)
    return str(fp() if callable(fp) else fp) if fp is not None else None


def _code_modules(model: nn.Module, loss_fn: Callable) -> list[str]:
    """Modules whose source defines the result: every submodule's class, the loss (and what it wraps), training/."""
    names = {type(m).__module__ for m in model.modules()}
    names.add(TRAINING_PACKAGE)

    def add(qualified: str) -> None:  # "pkg.mod.Class", "pkg.mod.f.<locals>.g": every dotted prefix may be the module
        parts = qualified.split(".<locals>")[0].split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))

    def walk(x, depth=0):  # modules named in the loss's settings: a partial's function, a wrapped loss class
        if depth > 8:
            return
        if isinstance(x, dict):
            for key in ("function", "method", "class", "type", "enum"):
                if isinstance(x.get(key), str):
                    add(x[key])
            for v in x.values():
                walk(v, depth + 1)
        elif isinstance(x, list):
            for v in x:
                walk(v, depth + 1)

    walk(canonical(loss_fn))
    return sorted(n for n in names if n)


def config_fingerprint(config: TrainerConfig, model: nn.Module, loss_fn: Callable, num_samples: int,
                       data_fingerprint: str | None = None) -> dict:
    """Everything a checkpoint must agree with to be reused, by part (see the module docstring)."""
    model_cfg = getattr(model, "config", None)
    # Values the data set before training (token statistics buffers, a frozen RLA inside a world model):
    # other values mean another training, even with identical shapes.
    fixed = list(model.named_buffers()) + [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    # Not the initial trainable weights: a resumed run restores them from the checkpoint, whatever it built.
    return {
        "data": {"fingerprint": data_fingerprint, "num_samples": num_samples},
        "model": {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "config": canonical(model_cfg) if model_cfg is not None else None,
            "parameters": [[n, list(p.shape), str(p.dtype), p.requires_grad] for n, p in model.named_parameters()],
            "buffers": {n: nested_digest(t) for n, t in fixed},
        },
        "trainer": {f: getattr(config, f) for f in HASHED_FIELDS},
        "loss": canonical(loss_fn),
        "sources": source_digests(*_code_modules(model, loss_fn)),
    }


def key_parts(fingerprint: dict) -> dict[str, str]:
    """One short hash per part of :func:`config_fingerprint` (what ``key.json`` stores and the warning compares)."""
    return {part: ckpt.stable_hash(fingerprint[part]) for part in KEY_PARTS}


def describe_change(old: dict | None, new: dict | None) -> str:
    """Which parts of the key differ between two ``key.json`` contents, naming changed source files."""
    if not old or not new:
        return "the checkpoint predates per-part keys (no key.json to compare)"
    changed = [p for p in KEY_PARTS if old.get("parts", {}).get(p) != new["parts"].get(p)]
    words = []
    for part in changed:
        if part == "sources":
            a, b = old.get("sources", {}), new.get("sources", {})
            files = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
            words.append(f"sources ({', '.join(files[:8])}{', ...' if len(files) > 8 else ''})")
        else:
            words.append(part)
    return "changed: " + (", ".join(words) if words else "nothing by part (hash scheme changed)")


def finished_result(model: nn.Module, state: dict, path: Path) -> TrainResult:
    """The result a complete checkpoint stands for: its weights loaded into ``model``, its history."""
    model.load_state_dict(state["model"])
    logger.info("checkpoint %s is complete (step %d): returning the trained model without training", path, state["step"])
    return TrainResult(model=model.cpu().eval(), history=pd.DataFrame(state["history"]),
                       final_val=dict(state.get("final_val") or {}), resumed_from_step=int(state["step"]))


def _write_key(folder: Path, config_hash: str) -> dict | None:
    """Record the key's parts beside the checkpoints this run will write (atomic); returns what was written."""
    parts = _PARTS.get(config_hash)
    if parts is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / KEY_FILE) as tmp:
        Path(tmp).write_text(json.dumps(parts, sort_keys=True, indent=1))
    return parts


def _read_key(folder: Path) -> dict | None:
    try:
        return json.loads((folder / KEY_FILE).read_text())
    except (OSError, ValueError):
        return None


def find_resumable(config: TrainerConfig, config_hash: str) -> tuple[Path, dict] | None:
    """The checkpoint to resume from, or None. A checkpoint of another key is moved aside with a warning that
    says which part of the key changed (data, model, trainer, loss, sources and which files)."""
    if not config.checkpoint_dir:
        return None
    folder = Path(config.checkpoint_dir)
    found = ckpt.load_latest(folder)
    if found is None:
        _write_key(folder, config_hash)
        return None
    path, state = found
    old_hash = str(state.get("config_hash"))
    if old_hash != config_hash:
        old_key = _read_key(folder)
        if old_key is not None and old_key.get("hash") != old_hash:
            old_key = None  # key.json of another run than this checkpoint's: cannot say what changed
        why = describe_change(old_key, _PARTS.get(config_hash))
        dest = ckpt.supersede(folder, old_hash)
        if old_key is not None:
            (folder / KEY_FILE).replace(dest / KEY_FILE)
        message = (f"run {config.run_name!r}: checkpoint {path} was written with another config/model/loss/code "
                   f"(hash {old_hash} != {config_hash}; {why}); moved to {dest}, training from scratch")
        logger.warning("%s", message)
        warnings.warn(message, CheckpointMismatchWarning, stacklevel=3)
        _write_key(folder, config_hash)
        return None
    if _read_key(folder) is None:  # a checkpoint from before key.json: record its (matching) key now
        _write_key(folder, config_hash)
    return path, state


def config_hash(config: TrainerConfig, model: nn.Module, loss_fn: Callable, train_dataset) -> str:
    """The hash a checkpoint of this run carries: a hash of :func:`key_parts` (see :func:`config_fingerprint`)."""
    fp = config_fingerprint(config, model, loss_fn, len(train_dataset), dataset_fingerprint(train_dataset))
    parts = key_parts(fp)
    value = ckpt.stable_hash(parts)
    _PARTS[value] = {"hash": value, "parts": parts, "sources": fp["sources"]}
    return value
