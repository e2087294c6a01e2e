"""Trainer checkpoints: atomic ``last.pt`` (+ ``prev.pt``), safe to load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain python containers only:
    format          "rla-trainer-ckpt/1"
    config_hash     hash of everything that changes the numbers (see ``trainer.config_fingerprint``)
    step            updates done
    complete        True once training reached ``max_steps`` (a re-run then returns without training)
    model, optimizer, scheduler, scaler      state dicts
    rng             one entry per rank: {"torch": uint8 tensor, "cuda": [uint8 tensors], "numpy": {...},
                    "python": {...}} (RNG states converted to tensors / lists)
    sampler         {"epoch", "batch_in_epoch", "seed", "num_samples", "batch_size"}
    accum           running sums of the train metrics since the last log row (history stays identical on resume)
    history         list of row dicts; final_val: dict

Write order (kill -9 safe): the new file is fully written to a temp sibling, the current ``last.pt`` is
renamed to ``prev.pt``, the temp file is renamed to ``last.pt``. A kill between the two renames leaves only
``prev.pt``, which :func:`load_latest` then falls back to; leftover temp files are removed on the next start.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rla_pipeline.utils.atomic import atomic_path, remove_stale_temps
from rla_pipeline.utils.hashing import json_digest

logger = logging.getLogger(__name__)

FORMAT = "rla-trainer-ckpt/1"
LAST = "last.pt"
PREV = "prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (unreadable, wrong format)."""


def stable_hash(obj: Any) -> str:
    """sha256 (16 hex chars) of a JSON-able object, independent of dict order."""
    return json_digest(obj, 16, default=str)


# ----------------------------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch (CPU + every CUDA device) RNG states as tensors / plain containers."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s, i)


# ------------------------------------------------------------------------------------------------ save/load
def save_checkpoint(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``folder/last.pt`` atomically, keeping the previous one as ``prev.pt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    last, prev = folder / LAST, folder / PREV
    state = {"format": FORMAT, **state}
    with atomic_path(last) as tmp:
        torch.save(state, tmp)
        if last.exists():
            os.replace(last, prev)
    return last


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one checkpoint file (``weights_only=True``); raises :class:`CheckpointError` when unusable."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a trainer checkpoint (format={getattr(state, 'get', dict)('format')!r})")
    return state


def load_latest(folder: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """``(path, state)`` of the newest readable checkpoint in ``folder`` (``last.pt``, else ``prev.pt``).

    Removes leftovers of interrupted writes first. ``None`` when there is no checkpoint.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    removed = remove_stale_temps(folder)
    if removed:
        logger.info("removed %d partial checkpoint file(s) from an interrupted write in %s", removed, folder)
    errors = []
    for name in (LAST, PREV):
        path = folder / name
        if not path.exists():
            continue
        try:
            return path, read_checkpoint(path)
        except CheckpointError as err:
            logger.warning("%s", err)
            errors.append(str(err))
    if errors:
        raise CheckpointError("no readable checkpoint in {}: {}".format(folder, "; ".join(errors)))
    return None


def supersede(folder: str | os.PathLike, old_hash: str) -> Path:
    """Move ``last.pt``/``prev.pt`` aside to ``folder/superseded/<old_hash>/`` (a newer one replaces it)."""
    folder = Path(folder)
    dest = folder / "superseded" / old_hash
    dest.mkdir(parents=True, exist_ok=True)
    for name in (LAST, PREV):
        if (folder / name).exists():
            os.replace(folder / name, dest / name)
    return dest
