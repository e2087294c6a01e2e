"""Kedro dataset for trained models: one safetensors file holding the weights, the class name and the config.

File layout (``safetensors`` header metadata, all strings):
    format  "rla-pipeline-model/1"
    class   registered model name (``rla_pipeline.models.registry``)
    module  python module that registers the class (imported on load when needed)
    config  JSON of ``dataclasses.asdict(model.config)``
    aliases JSON {dropped_name: kept_name} for tensors that share memory (tied weights): safetensors
            refuses shared tensors, so each storage is written once and the aliases restored on load.
Tensors: the model's ``state_dict`` as contiguous CPU tensors (dtypes kept).

The file format is torch-only (:func:`save_model`, :func:`load_model`, :func:`model_to_tensors` raise
``ModelFileError``, a ``ValueError``); :class:`TorchModelDataset` is the thin Kedro dataset over them. These three
functions belong below the Kedro floor (``training/`` logs weights with ``model_to_tensors``): their owner moves
them to ``models/`` or ``training/`` and this module then imports them from there.

```yaml
rla_model:
  type: rla_pipeline.datasets.torch_model.TorchModelDataset
  filepath: data/06_models/rla.safetensors
```
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from rla_pipeline.utils.atomic import atomic_path

FORMAT = "rla-pipeline-model/1"


class ModelFileError(ValueError):
    """A model cannot be written to, or read from, an rla-pipeline model file."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def model_to_tensors(model) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tensors, aliases)``: contiguous CPU copies of the state dict, each shared storage once.

    ``aliases`` maps a dropped state-dict key to the kept key that shares its memory.
    """
    state = model.state_dict()
    tensors: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, value in state.items():
        if not hasattr(value, "untyped_storage"):
            raise ModelFileError(f"state_dict entry {key!r} is not a tensor ({type(value).__name__}); cannot save")
        ident = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                 tuple(value.stride()), value.dtype)
        if value.numel() > 0 and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    return tensors, aliases


def save_model(model, path: str | Path) -> None:
    """Write a registered ``nn.Module`` with a ``config`` dataclass to ``path`` (atomically)."""
    import torch.nn as nn
    from safetensors.torch import save_file

    from rla_pipeline.models.registry import model_name

    if not isinstance(model, nn.Module):
        raise ModelFileError(f"expects an nn.Module, got {type(model).__name__}")
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
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_model(path: str | Path):
    """The model saved at ``path``, rebuilt by ``models.registry.build_model`` with its weights loaded strictly,
    on CPU in eval mode."""
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


class TorchModelDataset(AbstractDataset):
    """Kedro dataset: a registered ``nn.Module`` (with a ``config`` dataclass) as one safetensors file
    (:func:`save_model` / :func:`load_model`; their errors surface as ``DatasetError``)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    @property
    def path(self) -> Path:
        return Path(str(self._filepath))

    def save(self, data) -> None:
        try:
            save_model(data, self.path)
        except ModelFileError as err:
            raise DatasetError(f"TorchModelDataset({self._filepath}): {err}") from err

    def load(self):
        try:
            return load_model(self.path)
        except ModelFileError as err:
            raise DatasetError(str(err)) from err

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self.path.exists()
