"""Artifacts of a local sqlite store stay next to the store, whatever directory the process runs in."""
from __future__ import annotations

from pathlib import Path

import mlflow

from rla_pipeline import tracking


def test_new_experiment_in_sqlite_store_keeps_artifacts_beside_the_db(tmp_path, monkeypatch, mlflow_uri):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracking.use_experiment("exp-a")
    exp = mlflow.get_experiment_by_name("exp-a")
    db_dir = Path(mlflow_uri[len("sqlite:///"):]).parent
    assert exp.artifact_location == (db_dir / "mlruns").as_uri()
    with mlflow.start_run() as run:
        (tmp_path / "w.txt").write_text("x")
        mlflow.log_artifact(str(tmp_path / "w.txt"))
    assert [p for p in (db_dir / "mlruns").rglob("w.txt") if run.info.run_id in p.parts]
    assert not (elsewhere / "mlruns").exists()
    # a second call finds the experiment and does not recreate or move it
    tracking.use_experiment("exp-a")
    assert mlflow.get_experiment_by_name("exp-a").experiment_id == exp.experiment_id
