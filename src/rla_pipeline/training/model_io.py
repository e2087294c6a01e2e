"""Save and load a trained model as one safetensors file: weights + registered class name + JSON config.

Torch only (no Kedro): the trainer logs its weights artifact with :func:`save_model`, and the Kedro dataset
``rla_pipeline.datasets.torch_model.TorchModelDataset`` is a thin wrapper over :func:`save_model`/:func:`load_model`.

File layout (``safetensors`` header metadata, all strings):
    format  "rla-pipeline-model/1"
    class   registered model name (``rla_pipeline.models.registry``)
    module  python module that registers the class (imported on load when needed)
    config  JSON of ``dataclasses.asdict(model.config)``
    aliases JSON {dropped_name: kept_name} for tensors that share memory (tied weights): safetensors
            refuses shared tensors, so each storage is written once and the aliases restored on load.
Tensors: the model's ``state_dict`` as contiguous CPU tensors (dtypes kept).
Bytes: deterministic (header keys sorted, see :func:`sort_header`): the same weights give the same file.

```python
save_model(model, "data/06_models/rla.safetensors")   # atomic: temp file, then rename
model = load_model("data/06_models/rla.safetensors")  # rebuilt from the registry, CPU, eval mode
```
Safetensors holds tensors only, so loading never runs pickled code (the role ``torch.load(weights_only=True)``
plays for trainer checkpoints).
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rla_pipeline.utils.atomic import atomic_path

FORMAT = "rla-pipeline-model/1"


class ModelFileError(ValueError):
    """A model file that does not exist, is not ours, or whose weights do not fit its class."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def model_to_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, aliases)``: contiguous CPU copies of the state dict, each shared storage once.

    ``aliases`` maps a dropped state-dict key to the kept key that shares its memory.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(f"state_dict entry {key!r} is not a tensor ({type(value).__name__}); cannot save")
        ident = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                 tuple(value.stride()), value.dtype)
        if value.numel() > 0 and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    return tensors, aliases


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model`` (a registered class with a ``config`` dataclass) to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    from rla_pipeline.models.registry import model_name

    if not isinstance(model, nn.Module):
        raise ModelFileError(f"save_model({path}) expects an nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise ModelFileError(f"{type(model).__name__} has no `config` dataclass attribute; cannot save it")
    tensors, aliases = model_to_tensors(model)
    meta = {
        "format": FORMAT,
        "class": model_name(model),
        "module": type(model).__module__,
        "config": json.dumps(dataclasses.asdict(config), default=_json_default, sort_keys=True),
        "aliases": json.dumps(aliases, sort_keys=True),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        sort_header(tmp)
    return path


def sort_header(path: str | os.PathLike) -> None:
    """Rewrite a safetensors file's JSON header in place with its metadata keys sorted, so the same weights give
    the same bytes (DVC hashes, golden files). safetensors writes the metadata from a Rust ``HashMap``, whose
    order changes from process to process. The header keeps its length, so the tensor data is not moved."""
    with open(path, "r+b") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        ordered = {}
        if "__metadata__" in header:
            ordered["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
        ordered.update(sorted(header.items()))  # tensor entries: offsets are explicit, their order is free
        blob = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(blob) > n:
            raise ModelFileError(f"{path}: re-serialised safetensors header grew ({len(blob)} > {n} bytes)")
        fh.seek(8)
        fh.write(blob + b" " * (n - len(blob)))  # safetensors pads its header with spaces (8-byte alignment)


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved at ``path`` (registry class + config), load its weights strictly; CPU, eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from rla_pipeline.models.registry import build_model

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not an rla-pipeline model file (format={meta.get('format')!r})")
    model = build_model(meta["class"], json.loads(meta["config"]), module=meta.get("module"))
    state = load_file(str(path), device="cpu")
    for dropped, kept in json.loads(meta.get("aliases", "{}")).items():
        state[dropped] = state[kept]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFileError(f"weights in {path} do not fit {meta['class']}: {err}") from err
    return model.eval()
