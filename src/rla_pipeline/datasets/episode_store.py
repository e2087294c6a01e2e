"""Kedro dataset for the episode store: ``load()`` returns an :class:`EpisodeStore` handle on the folder.

The store is written episode by episode (atomically) by the ingestion sources through this handle, so the
catalog owns the path and nodes never see it. ``save()`` accepts the handle back (a no-op check) so a node may
declare the store as an output when that reads better in kedro-viz.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from rla_pipeline.episodes.format import EpisodeStore


class EpisodeStoreDataset(AbstractDataset[EpisodeStore, EpisodeStore]):
    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> EpisodeStore:
        self._path.mkdir(parents=True, exist_ok=True)
        return EpisodeStore(self._path)

    def save(self, data: EpisodeStore) -> None:
        if not isinstance(data, EpisodeStore) or Path(data.root).resolve() != self._path.resolve():
            raise DatasetError(f"EpisodeStoreDataset at {self._path} can only be given its own store handle, got {data!r}")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
