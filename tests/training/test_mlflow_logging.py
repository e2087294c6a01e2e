"""The trainer's MLflow child run: params, per-step metrics, final weights; a failing run is never left RUNNING."""
from __future__ import annotations

import mlflow
import optuna
import pytest
import torch
from safetensors.torch import load_file

from trainer_toy import RegressionDataset, make_model, mse_loss

from rla_pipeline.training.trainer import TrainerConfig, train


@pytest.fixture
def parent_run(tmp_path):
    old_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("trainer-test")
    try:
        with mlflow.start_run(run_name="kedro-run") as run:
            yield run
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(old_uri)


def _children(parent_id: str):
    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name("trainer-test")
    return client, client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_child_run_has_params_metrics_and_weights_and_a_pruned_run_is_closed(parent_run, tmp_path):
    config = TrainerConfig(run_name="toy-mlflow", max_steps=20, batch_size=16, lr=5e-3, log_every=5, val_every=10,
                           progress=False)
    result = train(make_model(), mse_loss, RegressionDataset(64), RegressionDataset(32, 1), config)
    assert mlflow.active_run().info.run_id == parent_run.info.run_id  # the child run was closed
    client, runs = _children(parent_run.info.run_id)
    assert len(runs) == 1
    child = runs[0]
    assert child.info.run_name == "toy-mlflow" and child.info.status == "FINISHED"
    assert child.data.params["trainer.lr"] == "0.005"
    assert child.data.params["model.hidden"] == "32"
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
    assert steps == [5, 10, 15, 20]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val/loss")] == [10, 20]
    path = client.download_artifacts(child.info.run_id, "weights/model.safetensors", str(tmp_path))
    saved = load_file(path)
    for k, v in result.model.state_dict().items():
        assert torch.equal(saved[k], v)

    def prune(step, metrics):
        raise optuna.TrialPruned(f"pruned at {step}")

    with pytest.raises(optuna.TrialPruned):
        train(make_model(), mse_loss, RegressionDataset(64), RegressionDataset(32, 1),
              TrainerConfig(run_name="pruned", max_steps=20, batch_size=16, val_every=5, progress=False),
              callbacks=[prune])
    assert mlflow.active_run().info.run_id == parent_run.info.run_id
    _, runs = _children(parent_run.info.run_id)
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"toy-mlflow": "FINISHED", "pruned": "FAILED"}


def test_a_resumed_training_names_the_run_whose_checkpoint_it_continues(parent_run, tmp_path):
    """The checkpoint carries the MLflow run id that wrote it; the run that resumes from it is tagged with that id
    (and the Kedro parent run too, through hooks.link_resumed_runs)."""
    from rla_pipeline.hooks import link_resumed_runs
    from rla_pipeline.training import checkpoint as ckpt

    config = TrainerConfig(run_name="toy-resume", max_steps=20, batch_size=16, val_every=5, checkpoint_every=5,
                           checkpoint_dir=str(tmp_path / "ck"), progress=False)

    def crash(step, metrics):
        if step >= 10:
            raise RuntimeError("crash after a checkpoint")

    with pytest.raises(RuntimeError, match="crash"):
        train(make_model(), mse_loss, RegressionDataset(64), RegressionDataset(32, 1), config, callbacks=[crash])
    client, runs = _children(parent_run.info.run_id)
    (first,) = runs
    _, state = ckpt.load_latest(tmp_path / "ck")
    assert state["mlflow_run_id"] == first.info.run_id and not state["complete"]

    result = train(make_model(), mse_loss, RegressionDataset(64), RegressionDataset(32, 1), config)
    assert result.resumed_from_step == state["step"]
    _, runs = _children(parent_run.info.run_id)
    (second,) = [r for r in runs if r.info.run_id != first.info.run_id]
    assert second.data.tags["resumed_from_run_id"] == first.info.run_id
    assert link_resumed_runs(parent_run.info.run_id, client) == {second.info.run_id: first.info.run_id}
    assert client.get_run(parent_run.info.run_id).data.tags["resumed_from_run_id.toy-resume"] == first.info.run_id
