"""Kedro dataset for trained models: one safetensors file holding the weights, the class name and the config.

The file format (layout in its module docstring) and its torch-only reader/writer live in :mod:`rla_pipeline.training.model_io`
(``save_model``, ``load_model``, ``ModelFileError``); this module is only the Kedro dataset over them.

```yaml
rla_model:
  type: rla_pipeline.datasets.torch_model.TorchModelDataset
  filepath: data/06_models/rla.safetensors
```
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from rla_pipeline.training.model_io import ModelFileError, load_model, save_model


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
