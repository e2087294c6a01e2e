"""Thin MLflow helpers that library code may call freely: each is a no-op when no MLflow run is active.

The project hook (``rla_pipeline.hooks.MlflowRunHook``) opens one run per ``kedro run``; trainers open
nested child runs under it with :func:`child_run`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from typing import Any, Iterator

from rla_pipeline.utils.config import flatten

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ process liveness
# Set on every run this project opens, so that a later `kedro run` can tell a run whose process was killed
# (hooks.mark_dead_runs_killed).
HOST_TAG, PID_TAG, STARTED_TAG = "process.host", "process.pid", "process.started"


def _process_start(pid: int) -> float | None:
    """Start time (epoch s) of process ``pid``, or None when there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that let a later run decide whether this process is still alive."""
    pid = os.getpid() if pid is None else pid
    started = _process_start(pid)
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: "" if started is None else f"{started:.2f}"}


def process_alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` still runs the process that started at ``started`` (a recycled pid does not count)."""
    now = _process_start(pid)
    if now is None:
        return False
    if not started:
        return True  # no start time recorded: the pid alone decides
    # create_time is derived from boot time and clock ticks: allow a little rounding.
    return abs(now - float(started)) < 1.0


def _mlflow():
    import mlflow

    return mlflow


def use_experiment(name: str) -> None:
    """``mlflow.set_experiment(name)``, but a new experiment in a local sqlite store keeps its artifacts in
    ``mlruns/`` next to the database file, not in ``./mlruns`` of whatever directory the process runs in (a
    worker started elsewhere would scatter weights over the working tree). Other stores keep their own default.
    """
    mlflow = _mlflow()
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        from pathlib import Path

        db = Path(uri[len("sqlite:///"):])
        try:
            mlflow.create_experiment(name, artifact_location=(db.resolve().parent / "mlruns").as_uri())
        except Exception:  # noqa: BLE001 - another process created it first: fine, use theirs
            if mlflow.get_experiment_by_name(name) is None:
                raise
    mlflow.set_experiment(name)


def active() -> bool:
    try:
        return _mlflow().active_run() is not None
    except Exception:  # pragma: no cover - mlflow missing or broken store
        return False


def log_params(params: dict[str, Any]) -> None:
    if not active():
        return
    flat = {k: (str(v)[:500]) for k, v in flatten(params).items()}
    mlflow = _mlflow()
    # MLflow refuses to change a logged param: log only new keys.
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params
    new = {k: v for k, v in flat.items() if k not in existing}
    items = list(new.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    if not active():
        return
    clean = {}
    for k, v in metrics.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(fv):
            clean[k.replace("@", "_at_")] = fv
    if clean:
        _mlflow().log_metrics(clean, step=step)


def set_tags(tags: dict[str, Any]) -> None:
    if active():
        _mlflow().set_tags({k: str(v) for k, v in tags.items()})


def log_artifact(path: str, artifact_path: str | None = None) -> None:
    if active():
        _mlflow().log_artifact(str(path), artifact_path=artifact_path)


def active_run_id() -> str | None:
    if not active():
        return None
    return _mlflow().active_run().info.run_id


@contextlib.contextmanager
def child_run(name: str, tags: dict[str, Any] | None = None) -> Iterator[str | None]:
    """A nested MLflow run under the active one (yields its id), or nothing when none is active.

    An exception inside marks the child run FAILED and propagates.
    """
    if not active():
        yield None
        return
    # process.* tags: a later `kedro run` marks this child KILLED if its process dies with it still open.
    tags = {**process_tags(), **(tags or {})}
    run = _mlflow().start_run(run_name=name, nested=True, tags={k: str(v) for k, v in tags.items()})
    with ending(run) as run_id:
        yield run_id


@contextlib.contextmanager
def ending(run) -> Iterator[str]:
    """Yield the id of an MLflow run that was just started; end it FINISHED, or FAILED if the body raises."""
    mlflow = _mlflow()
    try:
        yield run.info.run_id
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
