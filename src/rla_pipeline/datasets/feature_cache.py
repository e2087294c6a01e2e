"""Kedro dataset for the DINO feature cache: ``load()`` returns a :class:`FeatureCache` handle on the folder.

The cache fills itself entry by entry (atomically) inside the features node through this handle, so the catalog owns
the path and nodes never see it. ``save()`` only checks that it is given this dataset's own handle back (a node
returns the handle so kedro-viz shows the cache as the features pipeline's output).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from rla_pipeline.features.cache import FeatureCache


class FeatureCacheDataset(AbstractDataset[FeatureCache, FeatureCache]):
    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> FeatureCache:
        self._path.mkdir(parents=True, exist_ok=True)
        return FeatureCache(self._path)

    def save(self, data: FeatureCache) -> None:
        if not isinstance(data, FeatureCache) or Path(data.root).resolve() != self._path.resolve():
            raise DatasetError(f"FeatureCacheDataset at {self._path} can only be given its own cache handle, got {data!r}")
        if not data.manifest_path.exists():
            raise DatasetError(f"feature cache at {self._path} has no manifest: the features node did not finish")

    def _exists(self) -> bool:
        return (self._path / "manifest.parquet").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
