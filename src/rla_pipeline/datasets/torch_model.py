"""Kedro dataset for trained models: one safetensors file holding the weights, the class name and the config.

The file format (layout in its module docstring) and its torch-only reader/writer live in :mod:`rla_pipeline.training.model_io`
(``save_model``, ``load_model``, ``ModelFileError``); this module is only the Kedro dataset over them.

```yaml
rla_model:
  type: rla_pipeline.datasets.torch_model.TorchModelDataset
  filepath: data/06_models/rla.safetensors
```
Inside ``kedro run`` every save is also registered in the MLflow Model Registry as ``rla_pipeline.<dataset name>``
(``hooks.MlflowRunHook.after_dataset_saved`` -> :meth:`TorchModelDataset.register_in_mlflow`; docs/tracking.md).
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

    def register_in_mlflow(self, name: str, tags: dict[str, Any] | None = None):
        """Log the saved file to the active MLflow run as a pyfunc model and register it as
        ``rla_pipeline.<name>`` (:func:`rla_pipeline.datasets.mlflow_model.register_model_file`); the run hook
        calls it after each save. None when ``RLA_REGISTER_MODELS=0`` or no run is active."""
        from rla_pipeline.datasets.mlflow_model import register_model_file

        return register_model_file(self.path, name, tags)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self.path.exists()
