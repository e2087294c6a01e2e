"""Where the study lives: the storage URL (env > params > catalog default) and the Optuna RDB storage.

Any Optuna RDB URL works: an sqlite file on one machine, PostgreSQL/MySQL across machines. The RDB storage gets a
heartbeat, so a trial whose worker died is failed and re-queued with the same params.
"""
from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

from rla_pipeline.tuning.config import TuneConfig

STORAGE_ENV = "RLA_OPTUNA_STORAGE"


def resolve_storage(cfg_storage: str | None, default: str | None) -> str:
    """The storage URL: env ``RLA_OPTUNA_STORAGE`` > ``tune.storage`` > ``default`` (the catalog's sqlite file)."""
    url = os.environ.get(STORAGE_ENV) or cfg_storage or default
    if not url:
        raise ValueError(f"no Optuna storage: set tune.storage, {STORAGE_ENV}, or the optuna_storage catalog entry")
    return url


def sqlite_url(path: str | os.PathLike) -> str:
    """Absolute ``sqlite:///`` URL for a file path (the parent folder is created)."""
    p = Path(path).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


def redact_url(url: str) -> str:
    """Hide a password in an RDB URL before it is written to a report."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _rdb_storage(storage_url: str, cfg: TuneConfig):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat: "experimental"
        return RDBStorage(
            url=storage_url,
            heartbeat_interval=int(cfg.heartbeat_interval),
            grace_period=3 * int(cfg.heartbeat_interval),
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=int(cfg.max_retry)),
            # sqlite from several processes: wait for the lock instead of failing at once.
            engine_kwargs={"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else None,
        )


def open_study(storage_url: str, cfg: TuneConfig, worker_seed: int | None = None, name: str | None = None):
    """Create or join the study ``name`` (default ``cfg.study_name``; ``run_worker`` passes the keyed name,
    ``tuning.study.study_storage_name``) with heartbeat + retry of dead trials -> (study, created)."""
    import optuna

    for attempt in range(3):  # two processes creating the schema of a fresh database at once may collide
        try:
            storage = _rdb_storage(storage_url, cfg)
            break
        except Exception:  # noqa: BLE001
            if attempt == 2:
                raise
            time.sleep(1.0 + attempt)
    seed = cfg.seed if worker_seed is None else worker_seed
    kwargs = dict(
        study_name=name or cfg.study_name,
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, len(cfg.shapes))),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=int(cfg.pruner_startup_trials), n_warmup_steps=int(cfg.pruner_warmup_steps)
        ),
    )
    try:  # exactly one process creates the study: it alone creates the MLflow parent run (see _mlflow_parent)
        return optuna.create_study(load_if_exists=False, **kwargs), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.create_study(load_if_exists=True, **kwargs), False
