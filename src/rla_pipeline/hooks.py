"""One MLflow run per ``kedro run``, tagged with where its numbers came from.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else an embedded sqlite store ``mlflow.db`` in the project root.
Tags: git commit (and whether the tree was dirty), Kedro session/run id, pipeline names, Kedro env, the DVC
hashes of the pipeline's data (from ``dvc.lock``), and the process that runs it (``process.host``,
``process.pid``, ``process.started``). A run that raises is marked FAILED, never left RUNNING.

A process killed with SIGKILL (or a machine that lost power) cannot close its run: MLflow would show it RUNNING
forever. So every ``kedro run`` first sweeps the tracking store for RUNNING runs of *this host* whose process is
gone (or whose pid now belongs to a newer process) and marks them KILLED (:func:`mark_dead_runs_killed`). A trainer
child run that resumed from a checkpoint gets ``resumed_from_run_id``: the dead run it continues
(:func:`link_resumed_runs`).

Every model a node saves through ``TorchModelDataset`` is logged to the run and registered in the MLflow Model
Registry as ``rla_pipeline.<dataset name>`` (:meth:`MlflowRunHook.after_dataset_saved`), its version tagged with
the run's git commit, the node, a DVC-style md5 of each of the node's file inputs (:func:`input_hashes`) and the
config hash of the trainer runs inside the node. ``RLA_REGISTER_MODELS=0`` turns that off.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

# process.* tags live in tracking.py: trainers (below the Kedro floor) open child runs with them too.
from rla_pipeline import tracking
from rla_pipeline.tracking import HOST_TAG, PID_TAG, STARTED_TAG, process_alive, process_tags  # noqa: F401

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


# ------------------------------------------------------------------------------------------ killed runs
KILLED_BY_TAG = "process.killed_detected_by"
RESUMED_FROM_TAG = "resumed_from_run_id"


def mark_dead_runs_killed(client=None, detected_by: str | None = None) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose process is gone; returns their ids.

    Runs are matched by the ``process.*`` tags that :class:`MlflowRunHook` and :func:`rla_pipeline.tracking.child_run`
    set. A RUNNING run without them (an older run, or a nested run of a library) is marked KILLED when its parent
    was. Runs of other hosts are left alone: their pids mean nothing here.
    """
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = client or MlflowClient(tracking_uri())
    host = socket.gethostname()
    exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not exp_ids:
        return []
    running = client.search_runs(exp_ids, filter_string="attributes.status = 'RUNNING'", max_results=5000)
    dead: list[str] = []
    for run in running:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        if not process_alive(int(tags[PID_TAG]), tags.get(STARTED_TAG)):
            dead.append(run.info.run_id)
    # Children that carry no process tags die with their parent (repeat: grandchildren).
    dead_set, grew = set(dead), True
    while grew:
        grew = False
        for run in running:
            rid, tags = run.info.run_id, run.data.tags
            if rid not in dead_set and PID_TAG not in tags and tags.get("mlflow.parentRunId") in dead_set:
                dead_set.add(rid)
                dead.append(rid)
                grew = True
    for rid in dead:
        if detected_by:
            client.set_tag(rid, KILLED_BY_TAG, detected_by)
        client.set_terminated(rid, status="KILLED")
    if dead:
        logger.warning("marked %d MLflow run(s) KILLED: their process on %s is gone (%s)", len(dead), host,
                       ", ".join(dead))
    return dead


def link_resumed_runs(parent_run_id: str, client=None) -> dict[str, str]:
    """Tag each trainer child run of ``parent_run_id`` that resumed from a checkpoint with the run it continues.

    The trainer stores its MLflow run id in every checkpoint and, resuming, tags its new child run
    ``resumed_from_run_id`` with it (exact); here the parent run gets ``resumed_from_run_id.<child name>``.
    For checkpoints written before that (no run id), the run it continues is the latest earlier run with the same
    name and ``trainer.config_hash`` that did not finish (KILLED or FAILED). Returns {child run id: continued run id}.
    """
    from mlflow import MlflowClient

    client = client or MlflowClient(tracking_uri())
    parent = client.get_run(parent_run_id)
    exp = parent.info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    links: dict[str, str] = {}
    for child in children:
        tags = child.data.tags
        if RESUMED_FROM_TAG in tags:  # the trainer read the run id from the checkpoint it resumed: exact
            links[child.info.run_id] = tags[RESUMED_FROM_TAG]
            client.set_tag(parent_run_id, f"{RESUMED_FROM_TAG}.{child.info.run_name}", tags[RESUMED_FROM_TAG])
            continue
        if "trainer.resumed_from_step" not in tags or "trainer.config_hash" not in tags:
            continue  # (older checkpoints carry no run id: fall back to the latest unfinished run of that key)
        name = child.info.run_name.replace("'", "")
        before = client.search_runs(
            [exp],
            filter_string=f"attributes.run_name = '{name}' and tags.`trainer.config_hash` = '{tags['trainer.config_hash']}'",
            order_by=["attributes.start_time DESC"],
        )
        before = [r for r in before if r.info.status in ("KILLED", "FAILED")
                  and r.info.start_time < child.info.start_time and r.info.run_id != child.info.run_id]
        if before:
            links[child.info.run_id] = before[0].info.run_id
            client.set_tag(child.info.run_id, RESUMED_FROM_TAG, before[0].info.run_id)
            client.set_tag(parent_run_id, f"{RESUMED_FROM_TAG}.{child.info.run_name}", before[0].info.run_id)
    return links


# ------------------------------------------------------------------------------------------ registered models
REGISTER_ENV = "RLA_REGISTER_MODELS"  # read by rla_pipeline.datasets.mlflow_model too: "0" turns it off


def _registration_on() -> bool:
    return os.environ.get(REGISTER_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _local_path(dataset) -> Path | None:
    """The local file/folder behind a catalog dataset (``path``, ``_filepath`` or ``_path``), None otherwise."""
    if getattr(dataset, "_protocol", "file") not in ("file", "local", None):
        return None
    for attr in ("path", "_filepath", "_path"):
        value = getattr(dataset, attr, None)
        if isinstance(value, (str, os.PathLike)):
            return Path(str(value))
    return None


def dvc_lock_md5s(root: Path) -> dict[str, str]:
    """``{path: md5}`` of every dep/out in ``dvc.lock`` (paths relative to ``root``, as DVC writes them)."""
    out: dict[str, str] = {}
    for key, md5 in dvc_data_hashes(root).items():
        out[key[len("dvc."):]] = md5
    return out


def input_hashes(node, catalog, root: Path) -> dict[str, str]:
    """DVC-style hashes of what ``node`` read: ``input.<name>.md5`` = md5 of each input file (DVC's file hash,
    computed now); an input folder gets the md5 ``dvc.lock`` records for it (``input.<name>.md5_from`` =
    ``dvc.lock``; not recomputed: feature caches are large), none when it is not there; ``input.params.sha256``
    over the parameters the node takes; ``inputs.md5`` over all of them (sorted ``name md5`` lines)."""
    import hashlib

    from rla_pipeline.utils.hashing import json_digest, sha256_file

    tags: dict[str, str] = {}
    params: dict[str, Any] = {}
    lock = None
    for name in sorted(node.inputs):
        if name == "parameters" or name.startswith("params:"):
            try:
                params[name] = catalog.load(name)
            except Exception:  # noqa: BLE001
                pass
            continue
        path = _local_path(catalog.get(name))
        if path is None:
            continue
        if path.is_file():
            tags[f"input.{name}.md5"] = sha256_file(path, hashlib.md5())
        elif path.is_dir():
            lock = dvc_lock_md5s(root) if lock is None else lock
            try:
                rel = path.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                continue
            if rel in lock:
                tags[f"input.{name}.md5"] = lock[rel]
                tags[f"input.{name}.md5_from"] = "dvc.lock"
    if params:
        tags["input.params.sha256"] = json_digest(params, 16, default=str)
    lines = sorted(f"{k} {v}" for k, v in tags.items() if k.endswith((".md5", ".sha256")))
    if lines:
        tags["inputs.md5"] = hashlib.md5("\n".join(lines).encode()).hexdigest()
    return tags


def trainer_runs_since(parent_run_id: str, since_ms: int, client=None) -> dict[str, str]:
    """``training.run_ids`` and ``trainer.config_hash`` (the checkpoint reuse key) of the trainer child runs of
    ``parent_run_id`` that started at or after ``since_ms`` (the node's start); {} when there are none."""
    from mlflow import MlflowClient

    client = client or MlflowClient(tracking_uri())
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                                   f"attributes.start_time >= {int(since_ms)}")
    runs = [r for r in runs if "trainer.config_hash" in r.data.tags]
    if not runs:
        return {}
    return {"training.run_ids": ",".join(sorted(r.info.run_id for r in runs)),
            "trainer.config_hash": ",".join(sorted({r.data.tags["trainer.config_hash"] for r in runs}))}


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
        self._node_start_ms: dict[str, int] = {}
        self._catalog = None
        self._lineage: dict[str, str] = {}
        self._root: Path | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        root = project_root()
        mlflow.set_tracking_uri(tracking_uri())
        tracking.use_experiment(os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT))
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
            **process_tags(),
        }
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
        self._root, self._catalog = root, catalog
        self._lineage = {k: str(v) for k, v in tags.items() if k.startswith(("git.", "kedro."))}
        try:
            mark_dead_runs_killed(mlflow.MlflowClient(), detected_by=self._run_id)
        except Exception as exc:  # noqa: BLE001 - housekeeping must never stop a pipeline
            logger.warning("could not sweep for killed MLflow runs: %s", exc)
        try:
            params = catalog.load("parameters")
        except Exception:
            params = {}
        from rla_pipeline.tracking import log_params

        log_params({k: v for k, v in (params or {}).items()})
        logger.info("MLflow run %s at %s", self._run_id, mlflow.get_tracking_uri())

    @hook_impl
    def before_node_run(self, node, catalog) -> None:
        self._node_t0[node.name] = time.perf_counter()
        self._node_start_ms[node.name] = int(time.time() * 1000)
        self._catalog = catalog  # the runner's catalog: the one that saves this node's outputs

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        """A model saved through a dataset with ``register_in_mlflow`` (``TorchModelDataset``): log it to this run
        and register it, tagged with the run's lineage, the node's input hashes and its trainer runs. A failure
        is logged, never raised: the model file is saved, the pipeline goes on."""
        if self._run_id is None or self._catalog is None or not _registration_on():
            return
        try:
            register = getattr(self._catalog.get(dataset_name), "register_in_mlflow", None)
        except Exception:  # noqa: BLE001
            register = None
        if register is None:
            return
        try:
            tags = {**self._lineage, "kedro.node": node.name,
                    **input_hashes(node, self._catalog, self._root or project_root())}
            since = self._node_start_ms.get(node.name)
            if since is not None:
                tags.update(trainer_runs_since(self._run_id, since))
            register(dataset_name, tags)
        except Exception as exc:  # noqa: BLE001 - registration must never stop a pipeline
            logger.warning("could not register model %s in MLflow: %s", dataset_name, exc)

    @hook_impl
    def after_node_run(self, node) -> None:
        t0 = self._node_t0.pop(node.name, None)
        if t0 is not None and self._run_id:
            from rla_pipeline.tracking import log_metrics

            log_metrics({f"node_seconds.{node.name}": time.perf_counter() - t0})
            try:
                link_resumed_runs(self._run_id)
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not link resumed training runs: %s", exc)

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
