"""`kedro run` against a real `mlflow server` (127.0.0.1, started by the test): what it logs, read back through
the server; a run killed with SIGKILL is marked KILLED by the next `kedro run`, which resumes its training from the
checkpoint and says which run it continues.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import BIN, kedro, kedro_env, mlflow_server, prepared_data_root  # noqa: E402

pytestmark = pytest.mark.slow

MAX_STEPS = 80
RLA_PARAMS = (f"rla.trainer.max_steps={MAX_STEPS},rla.trainer.checkpoint_every=5,rla.trainer.val_every=20,"
              "rla.trainer.log_every=5")


def _wait(cond, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited ({proc.returncode}) first:\n{Path(log).read_text()[-4000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, project_root):
    """Run A (`kedro run --pipelines=rla`) killed with SIGKILL after its first checkpoint; run B the same command."""
    data = prepared_data_root(tmp_path_factory, project_root)
    tmp = tmp_path_factory.mktemp("mlflow-server")
    ckpt_root = tmp / "ckpt"
    ckpt = ckpt_root / "rla"  # <checkpoint_root>/<stage>
    with mlflow_server(tmp / "server") as uri:
        client = MlflowClient(uri)
        env = kedro_env(data, MLFLOW_TRACKING_URI=uri, RLA_MLFLOW_EXPERIMENT="server-test")
        args = ["run", "--env=test", "--pipelines=rla", f"--params={RLA_PARAMS},checkpoint_root={ckpt_root}"]
        log_a = tmp / "run-a.log"
        with open(log_a, "w") as fh:
            proc = subprocess.Popen([str(BIN / "kedro"), *args], cwd=project_root, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT)
        try:
            _wait(lambda: (ckpt / "last.pt").exists(), 600, "run A's first checkpoint", proc, log_a)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        step_at_kill = torch.load(ckpt / "last.pt", map_location="cpu", weights_only=True)["step"]
        exp = client.get_experiment_by_name("server-test")
        runs_a = client.search_runs([exp.experiment_id], filter_string="tags.`process.pid` = '%d'" % proc.pid)
        status_a_before = {r.info.run_id: r.info.status for r in runs_a}

        out_b = kedro(args, project_root, env)
        yield {"client": client, "uri": uri, "exp": exp, "pid_a": proc.pid, "runs_a": runs_a,
               "status_a_before": status_a_before, "step_at_kill": step_at_kill, "out_b": out_b,
               "artifact_root": tmp / "server" / "artifacts", "data": data}


def _parent(runs):
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def _run_b(k):
    client, exp = k["client"], k["exp"]
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`kedro.pipelines` = 'rla'",
                              order_by=["attributes.start_time DESC"])
    b = [r for r in runs if r.data.tags.get("process.pid") != str(k["pid_a"])]
    assert len(b) == 1
    return b[0]


def test_killed_run_is_marked_killed_by_the_next_run(killed_then_resumed):
    k = killed_then_resumed
    client = k["client"]
    assert 0 < k["step_at_kill"] < MAX_STEPS  # killed mid-training
    # before run B, kill -9 had left run A and its training child RUNNING
    assert len(k["runs_a"]) == 2 and set(k["status_a_before"].values()) == {"RUNNING"}
    b = _run_b(k)
    for run_id in k["status_a_before"]:
        after = client.get_run(run_id)
        assert after.info.status == "KILLED"
        assert after.data.tags["process.killed_detected_by"] == b.info.run_id
        assert after.data.tags["process.host"] == b.data.tags["process.host"]
    assert b.info.status == "FINISHED"


def test_run_logs_params_metrics_nested_runs_and_weights_through_the_server(killed_then_resumed):
    k = killed_then_resumed
    client = k["client"]
    b = _run_b(k)
    assert b.data.params["rla.trainer.max_steps"] == str(MAX_STEPS)
    assert b.data.params["seed"] == "0"
    assert b.data.tags["kedro.env"] == "test" and b.data.tags["process.pid"].isdigit()
    assert any(m.startswith("node_seconds.") for m in b.data.metrics)
    children = client.search_runs([k["exp"].experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{b.info.run_id}'")
    train = [c for c in children if c.info.run_name == "rla"]
    assert len(train) == 1 and train[0].info.status == "FINISHED"
    child = train[0]
    losses = client.get_metric_history(child.info.run_id, "train/loss")
    assert losses and max(m.step for m in losses) == MAX_STEPS
    # the weights, downloaded from the server, are the model the pipeline saved
    path = client.download_artifacts(child.info.run_id, "weights/model.safetensors", str(k["artifact_root"].parent))
    logged = load_file(path)
    saved = load_file(k["data"] / "06_models" / "rla.safetensors")
    common = set(logged) & set(saved)
    assert common and all(torch.equal(logged[n], saved[n]) for n in common)
    # ... and they went through the server into its artifact root, not a local folder of the client
    assert list(k["artifact_root"].rglob("model.safetensors"))


def test_resumed_training_says_which_run_it_continues(killed_then_resumed):
    k = killed_then_resumed
    client = k["client"]
    b = _run_b(k)
    child = [c for c in client.search_runs([k["exp"].experiment_id],
                                           filter_string=f"tags.mlflow.parentRunId = '{b.info.run_id}'")
             if c.info.run_name == "rla"][0]
    killed_child = [r for r in k["runs_a"] if "mlflow.parentRunId" in r.data.tags]
    assert len(killed_child) == 1
    assert child.data.tags["trainer.resumed_from_step"] == str(k["step_at_kill"])
    assert child.data.tags["resumed_from_run_id"] == killed_child[0].info.run_id
    assert client.get_run(b.info.run_id).data.tags["resumed_from_run_id.rla"] == killed_child[0].info.run_id
