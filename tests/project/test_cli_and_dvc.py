"""The project as a user meets it: the Kedro CLI names, the pipeline registry, and DVC lineage."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def _run(cmd, cwd, env=None, timeout=300):
    full_env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", **(env or {})}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def test_registry_lists_every_pipeline_and_wmrl(project_root):
    out = _run([str(BIN / "kedro"), "registry", "list"], project_root)
    for name in ("wmrl", "__default__", "ingestion", "features", "rla", "world_model", "actionless_bc", "rl",
                 "evaluation", "tune"):
        assert f"- {name}" in out


def test_wmrl_chains_every_stage_and_is_the_default(project_root):
    from kedro.framework.project import configure_project, pipelines

    from rla_pipeline.pipelines.wmrl.pipeline import WMRL_CHAIN

    configure_project("rla_pipeline")
    wmrl = pipelines["wmrl"]
    assert list(WMRL_CHAIN) == ["ingestion", "features", "pixel_decoder", "rla", "world_model", "actionless_bc", "rl",
                               "evaluation"]
    for name in WMRL_CHAIN:
        assert set(pipelines[name].nodes) <= set(wmrl.nodes), f"{name} missing from wmrl"
    assert set(pipelines["__default__"].nodes) == set(wmrl.nodes)
    assert "build_html_report" in {n.name for n in pipelines["evaluation"].nodes}
    # raw episodes come in, both success tables and the report come out
    assert {"bc_success_table", "wmrl_success_table", "report_html"} <= wmrl.all_outputs()
    assert "report_html" in wmrl.outputs() and "episodes" in wmrl.inputs()


def test_every_pipeline_checks_all_parameters_first(project_root):
    from kedro.framework.project import configure_project, pipelines

    configure_project("rla_pipeline")
    # ingestion and features build their own config in their first node (and run on hand-built catalogs in tests)
    for name in ("rla", "world_model", "actionless_bc", "rl", "evaluation", "tune", "wmrl"):
        first = pipelines[name].nodes[0]
        assert first.name == "check_parameters" and first.inputs == ["parameters"], name


def test_a_parameter_typo_stops_the_run_before_any_stage(project_root, tmp_path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "RLA_DATA_ROOT": str(tmp_path / "data"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    res = subprocess.run([str(BIN / "kedro"), "run", "--pipelines=rla", "--env=test",
                          "--params", "rla.trainer.max_step=3"], cwd=project_root, capture_output=True, text=True,
                         timeout=300, env=env)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    # the ConfigError of the first node, not the missing episode index that split_episodes would trip on
    assert "ConfigError" in out and "max_step" in out and "rla.trainer" in out, out[-3000:]


def test_catalog_describe_datasets(project_root):
    out = _run([str(BIN / "kedro"), "catalog", "describe-datasets", "-p", "ingestion"], project_root)
    assert "episode_index" in out


def test_dvc_dag_lists_stages(project_root):
    if not (project_root / "dvc.yaml").exists():
        pytest.fail("dvc.yaml missing")
    out = _run([str(BIN / "dvc"), "dag"], project_root)
    assert "ingestion" in out and "features" in out


def test_dvc_push_pull_round_trips_raw_episodes(tmp_path, synthetic_store):
    """The raw episode store survives `dvc add/push`, deletion and `dvc pull` through a local remote, bit for bit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = str(BIN / "dvc")
    _run(["git", "init", "-q"], repo)
    _run([dvc, "init", "-q"], repo)
    _run([dvc, "config", "core.analytics", "false"], repo)
    _run([dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], repo)
    raw = repo / "data" / "01_raw" / "episodes"
    shutil.copytree(synthetic_store.root, raw)
    before = {p.relative_to(raw): p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    _run([dvc, "add", "data/01_raw/episodes"], repo)
    _run([dvc, "push"], repo)
    shutil.rmtree(raw)
    _run([dvc, "cache", "dir"], repo)
    shutil.rmtree(repo / ".dvc" / "cache")
    _run([dvc, "pull"], repo)
    after = {p.relative_to(raw): p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    assert before == after
    from rla_pipeline.episodes.format import EpisodeStore

    store = EpisodeStore(raw)
    for eid in store.episode_ids():
        store.validate(eid)
    eid = store.episode_ids()[0]
    np.testing.assert_array_equal(store.read_frames(eid), synthetic_store.read_frames(eid))


def test_kedro_viz_build_exports_a_static_site_with_the_wmrl_graph(project_root):
    import json

    _run([str(BIN / "kedro"), "viz", "build"], project_root, timeout=600)
    build = project_root / "build"
    assert (build / "index.html").exists()
    graph = json.loads((build / "api" / "pipelines" / "wmrl").read_text())
    names = {n["name"] for n in graph["nodes"]}
    assert {"episodes", "feature_cache", "rla_model", "world_model", "bc_success_table", "wmrl_success_table"} <= names
    # kedro-viz drops the layer view when catalog layers form a cycle: they must stay ordered raw -> reporting
    assert graph["layers"] == ["raw", "intermediate", "feature", "model_input", "models", "reporting"]
