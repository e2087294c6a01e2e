"""The command users run, for real, at the tiny test scale: `kedro run --pipelines=wmrl --env=test`.

Runs ingestion (real ManiSkill) -> DINO cache -> RLA -> world models -> BC/BC+RLA -> WMRL -> evaluation in the
simulator -> report, in a temporary data root (RLA_DATA_ROOT) with a temporary MLflow store, then checks what a
user would look at: both success tables, the report, the MLflow run and its tags. A second call with Kedro's older
`--pipeline` flag must work too and must not re-simulate or re-encode anything.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.sim, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _kedro(args, root, env):
    res = subprocess.run([str(BIN / "kedro"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, f"kedro {' '.join(args)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, project_root):
    from rla_pipeline.sim.vulkan import VulkanUnavailableError, ensure_vulkan

    try:
        ensure_vulkan()
    except VulkanUnavailableError as exc:  # pragma: no cover - `make test` runs `make setup` first
        pytest.fail(f"ManiSkill cannot render: {exc}")
    tmp = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ,
        "RLA_DATA_ROOT": str(tmp / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "2",
    }
    # the commit the run starts from (read before it: a commit made meanwhile must not count)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True,
                          check=True).stdout.strip()
    out = _kedro(["run", "--pipelines=wmrl", "--env=test"], project_root, env)
    return tmp, env, out, head


def test_wmrl_writes_both_success_tables_and_the_report(e2e):
    tmp, _, _, _ = e2e
    rep = tmp / "data" / "08_reporting"
    bc = pd.read_parquet(rep / "bc_success_table.parquet")
    wmrl = pd.read_parquet(rep / "wmrl_success_table.parquet")
    assert {"PushCube-v1", "average"} <= set(bc["task"]) and {"PushCube-v1", "average"} <= set(wmrl["task"])
    assert bc["bc_sr"].between(0, 100).all() and wmrl["wmrl_sr"].between(0, 100).all()
    md = (rep / "bc_success_table.md").read_text()
    assert "paper (reference" in md and "Verdict" in md
    html = (rep / "report.html").read_text()
    for section in ("Actionless BC", "WMRL", "Future prediction", "RLA autoencoder", "RANDOM-INIT"):
        assert section in html, section
    summary = pd.read_parquet(rep / "ingestion_summary.parquet")
    assert set(summary["kind"]) == {"demo", "play", "actionless"}
    index = pd.read_parquet(tmp / "data" / "02_intermediate" / "episode_index.parquet")
    assert index.loc[index["kind"] == "actionless", "action_dim"].isna().all()
    for name in ("rla.safetensors", "world_model.safetensors", "bc_policy.safetensors", "wmrl_policy.safetensors"):
        assert (tmp / "data" / "06_models" / name).stat().st_size > 0


def test_one_finished_mlflow_run_with_lineage_tags_and_nested_trainings(e2e):
    from mlflow import MlflowClient

    tmp, env, _, head = e2e
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("rla-pipeline")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`kedro.pipelines` = 'wmrl'")
    assert len(runs) >= 1
    run = runs[-1]
    assert run.info.status == "FINISHED"
    assert run.data.tags["kedro.env"] == "test"
    assert run.data.tags["git.commit"] == head  # the commit the numbers came from, not a placeholder
    assert run.data.tags.get("encoder_weights") == "random-init"
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    names = {c.info.run_name for c in children}
    assert {"rla", "bc_policy", "bc_rla_policy"} <= names, names


def test_old_pipeline_flag_reruns_without_redoing_cached_work(e2e, project_root):
    tmp, env, _, _ = e2e
    episodes = tmp / "data" / "01_raw" / "episodes"
    cache = tmp / "data" / "04_feature" / "dino_cache"
    before = {p: p.stat().st_mtime_ns for p in list(episodes.rglob("*.mp4")) + list(cache.rglob("*.safetensors"))}
    _kedro(["run", "--pipeline=features", "--env=test"], project_root, env)
    _kedro(["run", "--pipeline=ingestion", "--env=test"], project_root, env)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after, "a re-run with nothing changed rewrote episodes or cache entries"
    # the features re-run found every episode up to date and encoded none (its MLflow run's cache counters)
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("rla-pipeline")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`kedro.pipelines` = 'features'")
    assert len(runs) == 1, [r.data.tags.get("kedro.pipelines") for r in runs]
    m = runs[0].data.metrics
    assert m["features.episodes_encoded"] == 0 and m["features.frames_encoded"] == 0
    assert m["features.episodes_up_to_date"] == m["features.episodes"] == len(
        pd.read_parquet(tmp / "data" / "02_intermediate" / "episode_index.parquet"))
