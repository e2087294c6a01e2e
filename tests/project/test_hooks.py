"""The project hook: one MLflow run per kedro run, tagged; FAILED when the pipeline raises."""
from __future__ import annotations

import subprocess
import sys

from mlflow import MlflowClient


def _catalog(params):
    from kedro.io import DataCatalog, MemoryDataset

    return DataCatalog({"parameters": MemoryDataset(params)})


def test_run_is_opened_tagged_and_finished(mlflow_uri, project_root):
    from rla_pipeline.hooks import MlflowRunHook

    hook = MlflowRunHook()
    hook.before_pipeline_run(
        run_params={"session_id": "2026-11-24T00.00.00.000Z", "pipeline_names": ["ingestion"], "env": "test"},
        pipeline=None,
        catalog=_catalog({"seed": 3, "rla": {"lr": 0.001, "latent": {"tokens": 8}}}),
    )
    run_id = hook._run_id
    hook.after_pipeline_run()
    run = MlflowClient(mlflow_uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True).stdout.strip()
    assert tags["git.commit"] == (head or "unknown")
    assert tags["kedro.pipelines"] == "ingestion"
    assert tags["kedro.session_id"] == "2026-11-24T00.00.00.000Z"
    assert tags["kedro.env"] == "test"
    assert run.data.params["seed"] == "3"
    assert run.data.params["rla.latent.tokens"] == "8"


def test_failed_pipeline_marks_run_failed_and_closes_children(mlflow_uri):
    import mlflow

    from rla_pipeline.hooks import MlflowRunHook
    from rla_pipeline.tracking import child_run

    hook = MlflowRunHook()
    hook.before_pipeline_run(run_params={"session_id": "s1", "pipeline_names": ["rla"]}, pipeline=None, catalog=_catalog({}))
    parent = hook._run_id
    ctx = child_run("rla-train")
    child = ctx.__enter__()  # a node that died inside a child run, never closing it
    assert mlflow.active_run().info.run_id == child
    hook.on_pipeline_error()
    client = MlflowClient(mlflow_uri)
    assert client.get_run(parent).info.status == "FAILED"
    assert client.get_run(child).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_tracking_uri_defaults_to_project_sqlite(monkeypatch, project_root):
    from rla_pipeline import hooks

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert hooks.tracking_uri() == f"sqlite:///{(project_root / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert hooks.tracking_uri() == "http://127.0.0.1:5000"


def test_dvc_hashes_read_from_lock(tmp_path, monkeypatch):
    from rla_pipeline.hooks import dvc_data_hashes

    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  features:\n    deps:\n    - path: data/01_raw/episodes\n      md5: abc.dir\n"
        "    - path: src/rla_pipeline/features\n      md5: fff.dir\n    outs:\n    - path: data/04_feature/dino_cache\n      md5: def.dir\n"
        "  rla:\n    outs:\n    - path: data/06_models/rla.safetensors\n      md5: 123\n"
    )
    assert dvc_data_hashes(tmp_path, ["features"]) == {
        "dvc.data/01_raw/episodes": "abc.dir",
        "dvc.data/04_feature/dino_cache": "def.dir",
    }
    assert "dvc.data/06_models/rla.safetensors" in dvc_data_hashes(tmp_path)
