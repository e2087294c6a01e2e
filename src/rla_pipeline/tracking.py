"""Thin MLflow helpers that library code may call freely: each is a no-op when no MLflow run is active.

The project hook (``rla_pipeline.hooks.MlflowRunHook``) opens one run per ``kedro run``; trainers open
nested child runs under it with :func:`child_run`.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterator

from rla_pipeline.utils.config import flatten

logger = logging.getLogger(__name__)


def _mlflow():
    import mlflow

    return mlflow


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
    from rla_pipeline.hooks import process_tags

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
