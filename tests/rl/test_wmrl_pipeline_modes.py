"""`kedro run --pipelines=wmrl --env=test` in both WMRL policy modes (real ManiSkill, real decoder, tiny scale).

The default (rl.policy bc_resnet) runs the whole chain (the session-wide `wmrl_test_run` of tests/conftest.py,
shared with tests/e2e); then the same pipeline reruns, on a copy of its data, from the WMRL start-policy
node with ``--params=rl.policy=token`` (upstream stages reused from disk). Each mode must leave the right kind of
policy, calibration row and Table 3 baseline.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_wmrl_run, run_kedro

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def _model_class(path: Path) -> str:
    from rla_pipeline.datasets.torch_model import TorchModelDataset

    return type(TorchModelDataset(filepath=str(path)).load()).__name__


@pytest.mark.timeout(4800)
def test_wmrl_pipeline_runs_in_both_policy_modes(wmrl_test_run, tmp_path, project_root):
    data = wmrl_test_run["tmp"] / "data"  # the shared run of the default (rl.policy bc_resnet), read only
    rep, models = data / "08_reporting", data / "06_models"
    calib = pd.read_parquet(rep / "imagined_env_calibration.parquet").iloc[0]
    assert calib["policy"] == "bc_resnet" and calib["image_size"] == 64  # conf/test ingestion renders 64 px
    assert calib["imagined_env_chunks_per_s"] > 0 and calib["gap_frames"] > 0
    assert _model_class(models / "wmrl_policy.safetensors") == "BCResNetPolicy"
    assert _model_class(models / "wmrl_start_policy.safetensors") == "BCResNetPolicy"
    episodes = pd.read_parquet(data / "07_model_output" / "wmrl_eval_episodes.parquet")
    assert set(episodes["policy"]) == {"bc", "wmrl"}
    table3 = pd.read_parquet(rep / "wmrl_success_table.parquet")
    assert {"bc_sr", "wmrl_sr"} <= set(table3.columns)
    assert "BC-ResNet vs WMRL" in (rep / "wmrl_success_table.md").read_text()
    # Table 3 carries the decoding gap of the calibration row (pooled on the average row)
    avg = table3.set_index("task").loc["average"]
    assert avg["gap_action_l1"] == pytest.approx(calib["gap_action_l1"])
    assert avg["gap_ratio"] == pytest.approx(calib["gap_action_l1"] / calib["gap_action_scale"])
    assert avg["decoding_gap_flag"] == (calib["gap_action_l1"] > calib["gap_action_scale"] / 3)
    assert "Decoding gap" in (rep / "wmrl_success_table.md").read_text()
    # imagined episodes sized from the demos (conf/test: max_chunks null), and WMRL's decoder saw every task
    assert calib["max_chunks_source"].startswith("demos") and calib["max_chunks"] >= 2
    decoder_record = pd.read_parquet(models / "pixel_decoder_all_tasks_training.parquet")
    assert set(table3.task) - {"average"} <= set(decoder_record.task)

    # the token mode re-runs WMRL on a private copy (the shared run's files stay as the default left them)
    env = copy_wmrl_run(wmrl_test_run, tmp_path)["env"]
    data = tmp_path / "data"
    rep, models = data / "08_reporting", data / "06_models"
    run_kedro(["run", "--pipelines=wmrl", "--env=test", "--from-nodes=wmrl_start_policy", "--params=rl.policy=token"],
              project_root, env)
    calib = pd.read_parquet(rep / "imagined_env_calibration.parquet").iloc[0]
    assert calib["policy"] == "token" and "gap_frames" not in calib.index
    assert _model_class(models / "wmrl_policy.safetensors") == "TokenPolicy"
    episodes = pd.read_parquet(data / "07_model_output" / "wmrl_eval_episodes.parquet")
    assert set(episodes["policy"]) == {"token_bc", "wmrl"}
    table3 = pd.read_parquet(rep / "wmrl_success_table.parquet")
    assert {"token_bc_sr", "wmrl_sr"} <= set(table3.columns)
    assert table3["gap_action_l1"].isna().all() and not table3["decoding_gap_flag"].any()  # no decoder
