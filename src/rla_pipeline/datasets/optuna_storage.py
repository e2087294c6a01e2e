"""Catalog datasets for Optuna tuning: the Optuna storage handle and the (optional) tuned shape."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from kedro.io import AbstractDataset, DatasetError

from rla_pipeline.tuning.storage import STORAGE_ENV, redact_url, sqlite_url
from rla_pipeline.utils.atomic import atomic_write_text


class OptunaStorageDataset(AbstractDataset[None, str]):
    """Load-only handle: the Optuna storage URL of the study.

    ``RLA_OPTUNA_STORAGE`` (env) > ``url`` > ``sqlite:///<abs filepath>``. The sqlite file's folder is created.
    """

    def __init__(self, filepath: str | None = None, url: str | None = None, metadata: dict | None = None):
        if not filepath and not url:
            raise DatasetError("OptunaStorageDataset needs filepath (sqlite file) or url")
        self._filepath = filepath
        self._url = url
        self.metadata = metadata

    def load(self) -> str:
        return os.environ.get(STORAGE_ENV) or self._url or sqlite_url(self._filepath)

    def save(self, data: Any) -> None:
        raise DatasetError("OptunaStorageDataset is read-only (Optuna writes the database itself)")

    def _exists(self) -> bool:
        return bool(self._url) or Path(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "url": redact_url(self._url) if self._url else None}


class OptionalYAMLDataset(AbstractDataset[dict, dict | None]):
    """A YAML mapping written atomically; loading a missing file gives ``None`` (an optional pipeline input).

    ``rla_tuned_shape`` uses it: the tune pipeline writes it; ``rla`` (when ``rla.use_tuned_shape``) and the
    report read it, and run fine when tuning never ran.
    """

    def __init__(self, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict | None:
        if not self._filepath.exists():
            return None
        return yaml.safe_load(self._filepath.read_text()) or None

    def save(self, data: dict) -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"OptionalYAMLDataset saves a dict, got {type(data).__name__}")
        atomic_write_text(self._filepath, yaml.safe_dump(data, sort_keys=False))

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def preview(self):
        """kedro-viz: the YAML as JSON text."""
        import json

        from kedro_datasets._typing import JSONPreview

        return JSONPreview(json.dumps(self.load() or {"status": "not run"}))
