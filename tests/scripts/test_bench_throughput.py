"""Part (d) of scripts/bench_throughput.py (rla_pipeline.bench.throughput) against a real (sqlite) MLflow store,
and its FLOP counting."""
from __future__ import annotations

import pytest


@pytest.fixture()
def bench():
    from rla_pipeline.bench import throughput

    return throughput


def test_wmrl_timings_come_from_the_latest_wmrl_run(bench, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert "No tracking store" in bench.section_d(uri)  # no file: says so, creates nothing
    assert not (tmp_path / "m.db").exists()
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("rla-pipeline")
    for pipelines, seconds in (("wmrl", {"train_rla": 10.0, "encode": 5.0}), ("wmrl", {"train_rla": 30.0, "encode": 10.0}),
                               ("rla", {"train_rla": 99.0})):
        run = client.create_run(exp, tags={"kedro.pipelines": pipelines})
        for node, s in seconds.items():
            client.log_metric(run.info.run_id, f"node_seconds.{node}", s)
        client.set_terminated(run.info.run_id, "FINISHED")
    text = bench.section_d(uri)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    # the latest wmrl run (30 s + 10 s), slowest node first, not the later `rla` run
    assert lines[2:] == ["| train_rla | 30.0 | 75% |", "| encode | 10.0 | 25% |", "| **all nodes** | 40.0 | 100% |"]


def test_step_flops_counts_forward_and_backward_matmuls(bench):
    import torch

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 32, bias=False)

    ds = [{"x": torch.randn(64)} for _ in range(8)]
    model = Linear()
    flops = bench.step_flops(model, lambda m, b: (m.fc(b["x"]).square().mean(), {}), ds, batch_size=8)
    assert flops == 2 * (2 * 8 * 64 * 32)  # forward + the weight gradient (the input needs none)
    assert model.fc.weight.grad is None  # left no gradients behind for the trainer
