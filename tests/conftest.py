"""Shared fixtures: small real episodes (synthetic renderer, real mp4 + Parquet) and a throw-away MLflow store."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MS_SKIP_ASSET_DOWNLOAD_PROMPT", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture()
def synthetic_store(tmp_path):
    """An EpisodeStore with 2 demo, 2 play and 2 actionless synthetic episodes (64 px, 24 frames)."""
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.synthetic import write_synthetic_store

    store = EpisodeStore(tmp_path / "episodes")
    write_synthetic_store(store, n_per_kind=2)
    return store


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch):
    """A fresh sqlite MLflow store for one test (also exported as MLFLOW_TRACKING_URI)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
