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


# ------------------------------------------------------------------ runs whose process died (kill -9)
def _dead_pid() -> tuple[int, str]:
    """A real process, killed with SIGKILL: its pid and the start time tag it had."""
    from rla_pipeline.tracking import STARTED_TAG, process_tags

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = process_tags(proc.pid)[STARTED_TAG]
    proc.kill()
    proc.wait()
    return proc.pid, started


def test_process_alive_sees_a_killed_process_and_a_recycled_pid():
    from rla_pipeline.tracking import STARTED_TAG, process_alive, process_tags

    me = process_tags()
    assert process_alive(int(me["process.pid"]), me[STARTED_TAG])
    pid, started = _dead_pid()
    assert started and not process_alive(pid, started)
    # our pid, but recorded for a process that started at another time: a recycled pid is not the same process
    assert not process_alive(int(me["process.pid"]), f"{float(me[STARTED_TAG]) - 3600:.2f}")


def test_runs_of_dead_processes_on_this_host_are_marked_killed_and_the_rest_left_alone(mlflow_uri):
    import mlflow

    from rla_pipeline.hooks import mark_dead_runs_killed
    from rla_pipeline.tracking import process_tags

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("sweep")
    pid, started = _dead_pid()
    dead_tags = {**process_tags(), "process.pid": str(pid), "process.started": started}
    dead = client.create_run(exp, tags=dead_tags, run_name="dead").info.run_id
    dead_child = client.create_run(exp, tags={"mlflow.parentRunId": dead}, run_name="child-no-tags").info.run_id
    alive = client.create_run(exp, tags=process_tags(), run_name="alive").info.run_id
    elsewhere = client.create_run(exp, tags={**dead_tags, "process.host": "another-host"}, run_name="other").info.run_id
    done = client.create_run(exp, tags=dead_tags, run_name="finished").info.run_id
    client.set_terminated(done, "FINISHED")

    killed = mark_dead_runs_killed(client, detected_by="the-next-run")

    assert sorted(killed) == sorted([dead, dead_child])
    status = {r: client.get_run(r).info.status for r in (dead, dead_child, alive, elsewhere, done)}
    assert status == {dead: "KILLED", dead_child: "KILLED", alive: "RUNNING", elsewhere: "RUNNING", done: "FINISHED"}
    assert client.get_run(dead).data.tags["process.killed_detected_by"] == "the-next-run"
    assert mark_dead_runs_killed(client) == []  # idempotent
    assert mlflow.active_run() is None


def test_resumed_training_run_is_linked_to_the_killed_run_it_continues(mlflow_uri):
    from rla_pipeline.hooks import link_resumed_runs

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("resume")
    old_parent = client.create_run(exp, run_name="kedro-old").info.run_id
    t0 = 1_700_000_000_000  # ms; explicit start times: "earlier" must not depend on the clock's resolution
    old = client.create_run(exp, run_name="rla", start_time=t0, tags={"mlflow.parentRunId": old_parent,
                                                                      "trainer.config_hash": "h1"}).info.run_id
    client.set_terminated(old, "KILLED")
    other = client.create_run(exp, run_name="rla", tags={"trainer.config_hash": "h2"}).info.run_id  # other config
    client.set_terminated(other, "KILLED")
    parent = client.create_run(exp, run_name="kedro-new").info.run_id
    fresh = client.create_run(exp, run_name="world_model", tags={"mlflow.parentRunId": parent,
                                                                  "trainer.config_hash": "h3"}).info.run_id
    resumed = client.create_run(exp, run_name="rla", start_time=t0 + 60_000,
                                tags={"mlflow.parentRunId": parent, "trainer.config_hash": "h1",
                                      "trainer.resumed_from_step": "10"}).info.run_id

    assert link_resumed_runs(parent, client) == {resumed: old}
    assert client.get_run(resumed).data.tags["resumed_from_run_id"] == old
    assert client.get_run(parent).data.tags["resumed_from_run_id.rla"] == old
    assert "resumed_from_run_id" not in client.get_run(fresh).data.tags
