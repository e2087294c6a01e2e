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


def run_kedro(args, root, env, timeout=2400) -> str:
    """``kedro <args>`` in ``root`` as a subprocess; fails the test with the log tail when it fails."""
    import subprocess
    import sys

    res = subprocess.run([str(Path(sys.executable).parent / "kedro"), *args], cwd=root, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"kedro {' '.join(args)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
    return res.stdout + res.stderr


@pytest.fixture(scope="session")
def wmrl_test_run(tmp_path_factory, project_root):
    """ONE real ``kedro run --pipelines=wmrl --env=test`` (ManiSkill, DINO cache, every model, evaluation, report)
    in a temporary data root and MLflow store, shared by the tests that check its outputs (tests/e2e,
    tests/rl/test_wmrl_pipeline_modes.py): the whole chain costs minutes, so it runs once per session.

    -> dict(tmp, env, out, head). Treat its files as read-only: a test that re-runs part of the chain with other
    parameters copies the data root first (``copy_wmrl_run``)."""
    import subprocess

    from rla_pipeline.sim.vulkan import VulkanUnavailableError, ensure_vulkan

    try:
        ensure_vulkan()
    except VulkanUnavailableError as exc:  # pragma: no cover - `make test` runs `make setup` first
        pytest.fail(f"ManiSkill cannot render: {exc}")
    tmp = tmp_path_factory.mktemp("wmrl_run")
    env = {**os.environ, "RLA_DATA_ROOT": str(tmp / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "KEDRO_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "2"}
    # the commit the run starts from (read before it: a commit made meanwhile must not count)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True,
                          check=True).stdout.strip()
    out = run_kedro(["run", "--pipelines=wmrl", "--env=test"], project_root, env)
    return {"tmp": tmp, "env": env, "out": out, "head": head}


def copy_wmrl_run(run: dict, dest: Path) -> dict:
    """A private copy of ``wmrl_test_run``'s data root and MLflow store under ``dest`` -> (tmp, env) like it."""
    import shutil

    shutil.copytree(run["tmp"] / "data", dest / "data", symlinks=True)
    shutil.copy2(run["tmp"] / "mlflow.db", dest / "mlflow.db")
    if (run["tmp"] / "mlruns").exists():
        shutil.copytree(run["tmp"] / "mlruns", dest / "mlruns", symlinks=True)
    env = {**run["env"], "RLA_DATA_ROOT": str(dest / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlflow.db'}"}
    return {"tmp": dest, "env": env}
