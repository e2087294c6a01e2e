"""Running the study: workers that share one Optuna study, an exact trial budget, pruning, MLflow runs.

What a trial trains is given from outside as :class:`TrialData` (``stages.tune`` builds it from the RLA stage's
builders): this package knows Optuna, not the stages. The objective is the trainer's validation metric
(``cfg.metric``), reported at every validation so that Optuna's ``MedianPruner`` stops bad shapes early.

The study's name in the storage is ``<tune.study_name>-<key>``, the key a digest of the trial data's fingerprint and
the search space (:func:`study_storage_name`): asking for the same name with other data or another space opens
another study, never adds trials to the old one (the log names the other studies of that name).

Exactly ``n_trials`` trials end COMPLETE or PRUNED however many workers run: a worker stops when the finished plus
running trials reach the budget, and a trial that finds ``n_trials`` trials with smaller numbers already claimed
steps back (state FAIL, user attr ``over_budget``) without training. That closes the race between two workers
asking for the last trial at once. ``load_if_exists``: a resumed study keeps its finished trials.

MLflow: one parent run per study (its id is stored in the study's user attrs so that every worker process nests
under the same parent), one nested run per trial (params, validation curve, result), and inside it the trainer's
own child run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from rla_pipeline import tracking
from rla_pipeline.tuning.config import TuneConfig, parse_shape
from rla_pipeline.tuning.storage import open_study, redact_url

logger = logging.getLogger(__name__)

PARENT_RUN_ATTR = "mlflow_parent_run_id"


@dataclass
class TrialData:
    """Everything one trial needs besides its sampled params.

    ``train_one(latent_tokens, latent_dim, lr, max_steps, val_every, batch_size, run_name, callback)`` trains one
    model with that latent shape and returns the trainer's ``TrainResult``; ``callback(step, val_metrics)`` must be passed to
    the trainer (it reports to Optuna and may raise ``optuna.TrialPruned``). ``describe`` goes into MLflow params.
    """

    train_one: Callable[..., Any]
    describe: dict[str, Any] = field(default_factory=dict)
    # Digest of what a trial trains on and with (data content, split, model/trainer settings): part of the
    # study's key, so a study of the same name on other data never mixes its trials with these.
    fingerprint: str | None = None


# What changes a trial's result (the search space, how a trial trains and is judged); not the budget n_trials
# (a resumed study may be given more), the storage, the seed offsets, the heartbeat or the timeout.
SPACE_FIELDS = ("shapes", "lr_low", "lr_high", "max_steps", "val_every", "batch_size", "metric",
                "pruner_startup_trials", "pruner_warmup_steps")
KEY_ATTR = "rla_study_key"


def study_key_parts(cfg: TuneConfig, data: TrialData) -> dict[str, str]:
    """``{"data": ..., "space": ...}``: the digests that, with ``cfg.study_name``, name the study in the storage."""
    from rla_pipeline.utils.hashing import nested_digest

    return {"data": str(data.fingerprint), "space": nested_digest({f: getattr(cfg, f) for f in SPACE_FIELDS})[:8]}


def study_storage_name(cfg: TuneConfig, data: TrialData) -> str:
    """The study's name in the storage: ``<study_name>-<key>``, the key a digest of the trials' data and search
    space. Workers with the same data and space join one study; other data or another space gets its own."""
    from rla_pipeline.utils.hashing import nested_digest

    return f"{cfg.study_name}-{nested_digest(study_key_parts(cfg, data))[:10]}"


def _check_key(study, cfg: TuneConfig, parts: dict[str, str]) -> None:
    """Record the key parts in a new study; refuse a study whose recorded key is another (never mix trials)."""
    stored = study.user_attrs.get(KEY_ATTR)
    if stored is None:
        study.set_user_attr(KEY_ATTR, parts)
    elif stored != parts:
        changed = [k for k in parts if stored.get(k) != parts[k]]
        raise RuntimeError(f"study {study.study_name!r} was made for other {' and '.join(changed)} "
                           f"({stored} != {parts}); refusing to add trials to it")


def _log_siblings(storage_url: str, name: str, cfg: TuneConfig, parts: dict[str, str]) -> None:
    """Say so when the storage holds studies of the same ``study_name`` for other data or another space."""
    import optuna

    try:
        summaries = optuna.get_all_study_summaries(storage_url, include_best_trial=False)
    except Exception:  # noqa: BLE001 - informative only
        return
    for summ in summaries:
        if summ.study_name != name and summ.study_name.startswith(cfg.study_name + "-"):
            old = summ.user_attrs.get(KEY_ATTR) or {}
            changed = [k for k in parts if old.get(k) != parts[k]] or ["key"]
            logger.warning("study %r in this storage has other %s; its trials are not reused: this run uses %r",
                           summ.study_name, " and ".join(changed), name)


def _counted_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


class _OverBudget(Exception):
    """Raised by a trial that was claimed after the budget was already met (it trains nothing)."""


def _budget_callback(n_trials: int):
    """Stop this worker once finished + running trials reach the budget (the others finish theirs)."""

    def cb(study, trial) -> None:
        if n_claimed(study) >= n_trials:
            study.stop()

    return cb


@contextlib.contextmanager
def _mlflow_parent(study, cfg: TuneConfig, storage_url: str, created: bool) -> Iterator[str | None]:
    """Resume (or create) the study's MLflow parent run as the active run; yields its id (None: no tracking).

    The process that created the study creates the parent run and stores its id in the study's user attrs;
    joining workers wait for that id (so all trials of all workers nest under one parent).
    """
    if os.environ.get("RLA_TUNE_MLFLOW", "1") == "0":
        if created:
            study.set_user_attr(PARENT_RUN_ATTR, None)
        yield None
        return
    import mlflow

    if not tracking.active():  # a worker outside `kedro run`: MLflow's own URI (the CLI sets the project's)
        tracking.use_experiment(os.environ.get("RLA_MLFLOW_EXPERIMENT", "rla-pipeline"))
    parent_id = None
    if not created:
        deadline = time.monotonic() + 60.0
        while PARENT_RUN_ATTR not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)  # user_attrs re-reads the storage
        parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent_id is None:
        run = mlflow.start_run(run_name=f"optuna-{cfg.study_name}", nested=tracking.active(),
                               tags={"optuna.study": cfg.study_name, "optuna.storage": redact_url(storage_url)})
        study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    else:
        run = mlflow.start_run(run_id=parent_id, nested=True)
    tracking.log_params({"tune": dataclasses.asdict(cfg)})
    with tracking.ending(run) as run_id:
        yield run_id


def make_objective(data: TrialData, cfg: TuneConfig, parent_run_id: str | None):
    """The Optuna objective: sample (shape, lr), train, report the validation metric, return its final value."""
    import optuna

    def objective(trial: "optuna.Trial") -> float:
        # Claim check: trials numbered below ours that are (or may become) counted.
        study = trial.study
        from optuna.trial import TrialState

        ahead = [t for t in study.get_trials(deepcopy=False, states=(*_counted_states(), TrialState.RUNNING))
                 if t.number < trial.number]
        if len(ahead) >= cfg.n_trials:
            trial.set_user_attr("over_budget", True)
            study.stop()
            raise _OverBudget(f"trial {trial.number}: budget of {cfg.n_trials} trials already claimed")

        shape = trial.suggest_categorical("shape", cfg.shapes)
        lr = trial.suggest_float("lr", cfg.lr_low, cfg.lr_high, log=True)
        k, d = parse_shape(shape)
        trial.set_user_attr("latent_tokens", k)
        trial.set_user_attr("latent_dim", d)
        trial.set_user_attr("latent_size", k * d)
        curve: list[tuple[int, float]] = []

        def report(step: int, val_metrics: dict) -> None:
            if cfg.metric not in val_metrics:
                raise KeyError(f"validation metrics {sorted(val_metrics)} lack tune.metric={cfg.metric!r}")
            value = float(val_metrics[cfg.metric])
            curve.append((int(step), value))
            tracking.log_metrics({f"val_{cfg.metric}": value}, step=int(step))
            trial.report(value, int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"step {step}: val {cfg.metric}={value:.4f} above the median")

        with _trial_run(trial, parent_run_id, cfg) as _:
            tracking.log_params({"shape": shape, "latent_tokens": k, "latent_dim": d, "latent_size": k * d, "lr": lr,
                         "max_steps": cfg.max_steps, **{f"data.{a}": b for a, b in data.describe.items()}})
            try:
                result = data.train_one(latent_tokens=k, latent_dim=d, lr=lr, max_steps=cfg.max_steps,
                                        val_every=cfg.val_every, batch_size=cfg.batch_size,
                                        run_name=f"{cfg.study_name}-trial-{trial.number}", callback=report)
            except optuna.TrialPruned:
                trial.set_user_attr("curve", curve)
                tracking.set_tags({"optuna.state": "PRUNED"})
                raise
            final = getattr(result, "final_val", None) or {}
            value = float(final.get(cfg.metric, curve[-1][1] if curve else math.nan))
            if not math.isfinite(value):
                raise FloatingPointError(f"trial {trial.number}: val {cfg.metric} is {value}")
            trial.set_user_attr("curve", curve)
            tracking.log_metrics({f"final_val_{cfg.metric}": value})
            tracking.set_tags({"optuna.state": "COMPLETE"})
            return value

    return objective


@contextlib.contextmanager
def _trial_run(trial, parent_run_id: str | None, cfg: TuneConfig):
    if parent_run_id is None:
        yield None
        return
    import mlflow

    # process.* tags (host, pid): a worker killed mid-trial leaves this run RUNNING, and the next `kedro run` on
    # this host marks it KILLED (hooks.mark_dead_runs_killed). The study's parent run gets none: it is shared by
    # every worker, so one worker's death must not close it.
    run = mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                           tags={**tracking.process_tags(), "optuna.study": cfg.study_name,
                                 "optuna.trial": trial.number, "mlflow.parentRunId": parent_run_id})
    trial.set_user_attr("mlflow_run_id", run.info.run_id)
    import optuna

    try:
        yield run.info.run_id
    except optuna.TrialPruned:
        mlflow.end_run(status="FINISHED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def run_worker(storage_url: str, cfg: TuneConfig, data: TrialData, worker_seed: int | None = None):
    """Join the study and run trials until ``cfg.n_trials`` are COMPLETE or PRUNED (over all workers).

    Returns the study. Safe to run in several processes/machines at once on one storage.
    """
    import optuna

    seed = (cfg.seed + os.getpid()) % (2**31) if worker_seed is None else worker_seed
    if data.fingerprint is None:
        warnings.warn(f"tune: the trial data of study {cfg.study_name!r} has no fingerprint; the study is keyed by "
                      "its search space only, so a study on other data could be reused", stacklevel=2)
    name, parts = study_storage_name(cfg, data), study_key_parts(cfg, data)
    study, created = open_study(storage_url, cfg, worker_seed=seed, name=name)
    if created:
        _log_siblings(storage_url, name, cfg, parts)
    _check_key(study, cfg, parts)
    logger.info("tune: study %r (name %r + data %s + search space %s)", name, cfg.study_name, parts["data"],
                parts["space"])
    if n_counted(study) >= cfg.n_trials:
        logger.info("study %s already has %d finished trials: nothing to do", name, cfg.n_trials)
        return study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.monotonic()
    with _mlflow_parent(study, cfg, storage_url, created) as parent_id:
        objective = make_objective(data, cfg, parent_id)
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fail_stale_trials is "experimental"
                optuna.storages.fail_stale_trials(study)  # dead workers' trials -> FAIL + re-queued
            if n_counted(study) >= cfg.n_trials:
                break
            left = None if cfg.timeout_s is None else cfg.timeout_s - (time.monotonic() - t0)
            if left is not None and left <= 0:
                logger.warning("tune worker timed out with %d/%d trials finished", n_counted(study), cfg.n_trials)
                break
            if n_claimed(study) >= cfg.n_trials:
                # The budget is met only counting RUNNING trials: other workers' (wait for them) or a dead
                # worker's (failed and re-queued by the heartbeat check above once its grace period is over).
                time.sleep(min(2.0, float(cfg.heartbeat_interval)))
                continue
            study.optimize(objective, n_trials=None, timeout=left, catch=(_OverBudget,),
                           callbacks=[_budget_callback(cfg.n_trials)], gc_after_trial=True)
    return study


def n_counted(study) -> int:
    return len(study.get_trials(deepcopy=False, states=_counted_states()))


def n_claimed(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(*_counted_states(), TrialState.RUNNING)))

