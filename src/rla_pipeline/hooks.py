"""One MLflow run per ``kedro run``, tagged with where its numbers came from.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else an embedded sqlite store ``mlflow.db`` in the project root.
Tags: git commit (and whether the tree was dirty), Kedro session/run id, pipeline names, Kedro env, and the DVC
hashes of the pipeline's data (from ``dvc.lock``). A run that raises is marked FAILED, never left RUNNING.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

EXPERIMENT_ENV = "RLA_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "rla-pipeline"


def project_root() -> Path:
    return Path(os.environ.get("RLA_PROJECT_ROOT", Path(__file__).resolve().parents[2]))


def default_tracking_uri(root: Path | None = None) -> str:
    root = root or project_root()
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def git_info(root: Path) -> dict[str, str]:
    def _git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except Exception:
            return ""

    commit = _git("rev-parse", "HEAD") or "unknown"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def dvc_data_hashes(root: Path, stages: list[str] | None = None) -> dict[str, str]:
    """md5 of every dep/out recorded in ``dvc.lock`` for ``stages`` (all when None)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(lock.read_text()) or {}
    except Exception:
        return {}
    tags: dict[str, str] = {}
    for stage, body in (data.get("stages") or {}).items():
        if stages and stage not in stages:
            continue
        for kind in ("deps", "outs"):
            for item in body.get(kind) or []:
                path, md5 = item.get("path"), item.get("md5")
                if path and md5 and not str(path).startswith(("src", "conf")):
                    tags[f"dvc.{path}"] = md5
    return tags


def node_seed(seed: int, node_name: str) -> int:
    """The seed of one node: the run's ``seed`` parameter mixed with the node's name (stable across machines)."""
    import hashlib

    return (int(seed) * 1_000_003 + int(hashlib.sha256(node_name.encode()).hexdigest()[:8], 16)) % (2**31 - 1)


class SeedHook:
    """Seeds python, numpy and torch before every node from the ``seed`` parameter and the node's name.

    Without it a model's initial weights would depend on which nodes happened to run before in the same process
    (``--pipelines=rla`` alone vs inside ``wmrl``), so the same seed would not give the same numbers.
    """

    def __init__(self) -> None:
        self._seed = 0

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        try:
            self._seed = int((catalog.load("parameters") or {}).get("seed", 0))
        except Exception:
            self._seed = 0

    @hook_impl
    def before_node_run(self, node) -> None:
        from rla_pipeline.utils.seeding import seed_everything

        seed_everything(node_seed(self._seed, node.name))


class MlflowRunHook:
    """Opens the MLflow run before the pipeline and closes it after (FAILED on error)."""

    def __init__(self) -> None:
        self._run_id: str | None = None
        self._node_t0: dict[str, float] = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        root = project_root()
        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment(os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT))
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        names = [n for n in names if n] or ["__default__"]
        session_id = run_params.get("session_id") or run_params.get("run_id") or ""
        # A run left open by a crashed process in this interpreter must not swallow ours.
        while mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
        run = mlflow.start_run(run_name=f"kedro-{'+'.join(names)}-{session_id}")
        self._run_id = run.info.run_id
        stages = [n for n in names if n not in ("__default__", "wmrl")] or None
        tags = {
            "kedro.session_id": session_id,
            "kedro.run_id": run_params.get("run_id") or session_id,
            "kedro.pipelines": ",".join(names),
            "kedro.env": run_params.get("env") or "local",
            **git_info(root),
            **dvc_data_hashes(root, stages),
        }
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
        try:
            params = catalog.load("parameters")
        except Exception:
            params = {}
        from rla_pipeline.tracking import log_params

        log_params({k: v for k, v in (params or {}).items()})
        logger.info("MLflow run %s at %s", self._run_id, mlflow.get_tracking_uri())

    @hook_impl
    def before_node_run(self, node) -> None:
        self._node_t0[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node) -> None:
        t0 = self._node_t0.pop(node.name, None)
        if t0 is not None and self._run_id:
            from rla_pipeline.tracking import log_metrics

            log_metrics({f"node_seconds.{node.name}": time.perf_counter() - t0})

    def _end(self, status: str) -> None:
        import mlflow

        if self._run_id is None:
            return
        # Close any nested child runs a failing node left open, then ours.
        while mlflow.active_run() is not None and mlflow.active_run().info.run_id != self._run_id:
            mlflow.end_run(status=status)
        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
        else:
            mlflow.MlflowClient().set_terminated(self._run_id, status=status)
        self._run_id = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end("FINISHED")

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._end("FAILED")
