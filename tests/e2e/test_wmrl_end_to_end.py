"""The command users run, for real, at the tiny test scale: `kedro run --pipelines=wmrl --env=test`.

Runs ingestion (real ManiSkill) -> DINO cache -> RLA -> world models -> BC/BC+RLA -> WMRL -> evaluation in the
simulator -> report, in a temporary data root (RLA_DATA_ROOT) with a temporary MLflow store, then checks what a
user would look at: both success tables, the report, the MLflow run and its tags. A second call with Kedro's older
`--pipeline` flag must work too and must not re-simulate or re-encode anything.
"""
from __future__ import annotations

import pandas as pd
import pytest
from conftest import run_kedro

# the first test here usually pays for the shared run (wmrl_test_run) inside its own timeout
pytestmark = [pytest.mark.sim, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def e2e(wmrl_test_run):
    r = wmrl_test_run  # one shared run per session (tests/conftest.py)
    return r["tmp"], r["env"], r["out"], r["head"]


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
    run_kedro(["run", "--pipeline=features", "--env=test"], project_root, env, timeout=1500)
    run_kedro(["run", "--pipeline=ingestion", "--env=test"], project_root, env, timeout=1500)
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
