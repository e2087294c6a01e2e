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
    assert list(WMRL_CHAIN) == ["ingestion", "features", "rla", "world_model", "pixel_decoder", "actionless_bc", "rl",
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


# ------------------------------------------------------------------------------------------ dvc.yaml deps
def stage_source_files(name: str, project_root: Path) -> set[str]:
    """The source files a DVC stage's outputs depend on: the modules of its Kedro pipeline's node functions (nodes
    that write something: ``check_parameters`` writes nothing and cannot change an output), the dataset classes
    that load/save its datasets, the pipeline definition, the hooks (``SeedHook`` seeds every node) and settings,
    and every project module those import, transitively (``ast``, lazy imports included)."""
    import functools
    import glob

    import yaml
    from kedro.framework.project import configure_project, pipelines

    from rla_pipeline.utils.hashing import _module_file, module_closure

    configure_project("rla_pipeline")
    types = {}
    for path in glob.glob(str(project_root / "conf" / "base" / "catalog*.yml")):
        for key, entry in (yaml.safe_load(open(path)) or {}).items():
            if isinstance(entry, dict) and str(entry.get("type", "")).startswith("rla_pipeline."):
                types[key] = entry["type"].rsplit(".", 1)[0]
    pipe = pipelines[name]
    modules = {"rla_pipeline.hooks", "rla_pipeline.settings", "rla_pipeline.pipeline_registry"}
    for node in pipe.nodes:
        if node.outputs:
            func = node.func
            while isinstance(func, functools.partial):
                func = func.func
            modules.add(func.__module__)
    modules |= {types[d] for d in pipe.datasets() if d in types}
    # The pipeline definition itself (which nodes, wired how), not its imports: those are the node functions
    # above plus `check_parameters`, which writes nothing.
    definition = _module_file(f"rla_pipeline.pipelines.{name}.pipeline")
    files = {_module_file(m) for m in module_closure(*modules)} | {definition, definition.parent / "__init__.py"}
    return {f.relative_to(project_root).as_posix() for f in files if f is not None}


def test_dvc_deps_cover_every_module_a_stage_imports(project_root):
    """Each stage's `deps` cover the sources its outputs come from, derived from the code (so the next new module
    cannot be missed): a change there makes `dvc status` call the stage changed."""
    import yaml

    stages = yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]
    assert len(stages) >= 8
    missing = {}
    for stage, spec in stages.items():
        pipeline = spec["cmd"].split("--pipelines=")[1].split()[0]
        deps = [str(d).rstrip("/") for d in spec.get("deps", [])]
        files = stage_source_files(pipeline, project_root)
        assert any(f.endswith(f"pipelines/{pipeline}/pipeline.py") for f in files)
        uncovered = sorted(f for f in files if not any(f == d or f.startswith(d + "/") for d in deps))
        if uncovered:
            missing[stage] = uncovered
    assert not missing, f"dvc.yaml deps miss these sources (add them to the stage's deps): {missing}"


def test_dvc_status_sees_a_change_in_stage_code(tmp_path, project_root):
    """With every stage's outputs committed, `dvc status` is clean; editing a stage module or a module it imports
    (stages/rla.py, features/samples.py) calls exactly the stages that import it changed."""
    import yaml

    repo = tmp_path / "clone"
    shutil.copytree(project_root / "src" / "rla_pipeline", repo / "src" / "rla_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(project_root / "conf" / "base", repo / "conf" / "base")
    shutil.copy(project_root / "dvc.yaml", repo / "dvc.yaml")
    dvc = str(BIN / "dvc")
    _run(["git", "init", "-q"], repo)
    _run([dvc, "init", "-q"], repo)
    _run([dvc, "config", "core.analytics", "false"], repo)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for spec in stages.values():  # stand-in outputs, so that `dvc commit` can record the stages as run
        for out in spec.get("outs", []):
            path = repo / (out if isinstance(out, str) else next(iter(out)))
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(path.name)
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "entry").write_text(path.name)
    _run([dvc, "commit", "-f", "-q"], repo, timeout=600)
    assert "up to date" in _run([dvc, "status"], repo, timeout=600)

    def changed_after_edit(relative: str) -> set[str]:
        with open(repo / relative, "a") as fh:
            fh.write("\n_EDITED = True\n")
        out = _run([dvc, "status", "--json"], repo, timeout=600)
        import json

        status = json.loads(out[out.index("{"):])
        _run([dvc, "commit", "-f", "-q"], repo, timeout=600)
        return set(status)

    rla_users = changed_after_edit("src/rla_pipeline/stages/rla.py")
    assert {"rla", "tune"} <= rla_users and not {"ingestion", "features", "actionless_bc"} & rla_users
    samples_users = changed_after_edit("src/rla_pipeline/features/samples.py")
    assert {"rla", "world_model", "actionless_bc", "rl", "tune"} <= samples_users
    assert "ingestion" not in samples_users


def test_episode_index_holds_no_absolute_path_and_survives_a_moved_data_folder(tmp_path):
    """episode_index.parquet is a DVC output: built in one folder, moved (or pulled into another clone), its bytes
    are the same and its paths still resolve, against the store wherever it now lives."""
    import pandas as pd

    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.sources.index import build_episode_index, combine_source_rows
    from rla_pipeline.episodes.synthetic import write_synthetic_store

    def index_bytes(data_root: Path) -> tuple[bytes, pd.DataFrame]:
        store = EpisodeStore(data_root / "01_raw" / "episodes")
        ids = store.episode_ids()
        rows = combine_source_rows([pd.DataFrame({"episode_id": ids, "task": "SyntheticPush-v0", "kind": "demo",
                                                  "kept": True, "status": "exists"})])
        index, _ = build_episode_index(store, rows, decode="none")
        out = data_root / "02_intermediate" / "episode_index.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        index.to_parquet(out)  # as the catalog's pandas.ParquetDataset writes it
        return out.read_bytes(), pd.read_parquet(out)

    first = tmp_path / "clone_a" / "data"
    write_synthetic_store(EpisodeStore(first / "01_raw" / "episodes"), n_per_kind=1, num_frames=6, size=32)
    blob_a, index_a = index_bytes(first)
    assert str(tmp_path) not in blob_a.decode("latin-1")
    assert not any(Path(p).is_absolute() for p in index_a["path"])
    moved = tmp_path / "elsewhere" / "clone_b" / "data"
    moved.parent.mkdir(parents=True)
    shutil.move(str(first), str(moved))
    store = EpisodeStore(moved / "01_raw" / "episodes")
    for row in index_a.to_dict("records"):  # the old index read against the moved store
        assert (store.resolve(row["path"]) / "meta.json").is_file()
        assert store.resolve(row["path"]) == store.episode_dir(row["episode_id"])
    blob_b, _ = index_bytes(moved)
    assert blob_a == blob_b  # the same DVC hash in any folder
