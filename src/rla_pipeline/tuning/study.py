"""Optuna study over the RLA latent shape (K query tokens x d dims) and the learning rate.

Each trial is a real RLA training on cached DINO tokens through the shared trainer
(``rla_pipeline.training.trainer.train``); the objective is the held-out reconstruction token L1 (the trainer's
validation metric ``cfg.metric``), reported to the trial at every validation so that Optuna's ``MedianPruner``
stops bad shapes early.

Storage is any Optuna RDB URL: the default is an sqlite file under the project (catalog entry ``optuna_storage``,
``data/06_models/optuna.db``); ``RLA_OPTUNA_STORAGE`` (env) or ``tune.storage`` (params) point every worker at one
shared database (sqlite on one machine, PostgreSQL/MySQL across machines). ``load_if_exists=True``: a resumed study
keeps its finished trials; a trial whose worker died is failed by the heartbeat and re-queued with the same params.

Exactly ``n_trials`` trials end COMPLETE or PRUNED however many workers run: a worker stops when the finished plus
running trials reach the budget, and a trial that finds ``n_trials`` trials with smaller numbers already claimed
steps back (state FAIL, user attr ``over_budget``) without training. That closes the race between two workers
asking for the last trial at once.

MLflow: one parent run per study (its id is stored in the study's user attrs so that every worker process nests
under the same parent), one nested run per trial (params, validation curve, result), and inside it the trainer's
own child run.

Extra workers on the same study (the data come from the Kedro catalog of the project in the working directory)::

    python -m rla_pipeline.tuning.study --storage sqlite:////abs/path/optuna.db --study rla_latent_shape --n-trials 16
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from rla_pipeline.utils.config import from_dict

logger = logging.getLogger(__name__)

STORAGE_ENV = "RLA_OPTUNA_STORAGE"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
_SHAPE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------
@dataclass
class TuneConfig:
    """The search space, budget and pruning of the RLA shape study (``params:tune``)."""

    study_name: str = "rla_latent_shape"  # one study per name in the storage; workers join it by name
    storage: str | None = None  # RDB URL; None: the catalog's optuna_storage file (RLA_OPTUNA_STORAGE env wins)
    n_trials: int = 8  # total trials that end COMPLETE or PRUNED, over all workers and resumes
    shapes: list[str] = field(default_factory=lambda: ["4x8", "8x8", "16x16", "32x64"])  # "KxD" latent shapes
    lr_low: float = 1e-4  # learning rate, sampled log-uniformly in [lr_low, lr_high]
    lr_high: float = 3e-3
    max_steps: int = 300  # trainer steps per trial
    val_every: int = 50  # validation (and pruning report) every this many steps
    batch_size: int | None = None  # None: the rla trainer's batch size
    metric: str = "l1"  # validation metric minimised (held-out reconstruction token L1)
    pruner_startup_trials: int = 2  # MedianPruner: trials finished before any pruning
    pruner_warmup_steps: int = 0  # MedianPruner: steps inside a trial before it may be pruned
    seed: int = 0  # sampler seed (each worker process offsets it by its pid so workers explore differently)
    heartbeat_interval: int = 10  # s; a RUNNING trial without heartbeat for 3 intervals is failed and re-queued
    max_retry: int = 1  # re-queues of a trial whose worker died
    timeout_s: float | None = None  # per-worker wall-clock limit

    @classmethod
    def from_dict(cls, d: dict | None) -> "TuneConfig":
        return from_dict(cls, d, where="tune")

    def __post_init__(self) -> None:
        self.shapes = [str(s) for s in self.shapes]
        if not self.shapes:
            raise ValueError("tune.shapes must list at least one 'KxD' shape")
        for s in self.shapes:
            parse_shape(s)
        if not (0 < self.lr_low <= self.lr_high):
            raise ValueError(f"tune.lr_low/lr_high must satisfy 0 < low <= high, got {self.lr_low}, {self.lr_high}")
        for name in ("n_trials", "max_steps", "val_every", "heartbeat_interval"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"tune.{name} must be > 0, got {getattr(self, name)}")


def parse_shape(shape: str) -> tuple[int, int]:
    """"16x32" -> (16, 32) (K query tokens, d dims)."""
    m = _SHAPE_RE.match(str(shape))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"latent shape {shape!r} is not of the form 'KxD' with K, D > 0")
    return int(m.group(1)), int(m.group(2))


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


# --------------------------------------------------------------------------------------------------------------
# What a trial trains on
# --------------------------------------------------------------------------------------------------------------
@dataclass
class TrialData:
    """Everything one trial needs besides its sampled params.

    ``train_one(latent_tokens, latent_dim, lr, max_steps, val_every, batch_size, run_name, callback)`` trains one
    RLA with that shape and returns the trainer's ``TrainResult``; ``callback(step, val_metrics)`` must be passed to
    the trainer (it reports to Optuna and may raise ``optuna.TrialPruned``). ``describe`` goes into MLflow params.
    """

    train_one: Callable[..., Any]
    describe: dict[str, Any] = field(default_factory=dict)


def rla_trial_data(train_dataset, val_dataset, rla_model: dict, trainer: dict, token_mean=None, token_std=None,
                   ) -> TrialData:
    """TrialData that trains ``ResidualLatentActionAutoencoder`` with ``rla_loss`` through the shared trainer.

    train_dataset / val_dataset: map-style datasets of dicts with "s_t", "s_th" float (N, D) tensors
    (``TokenPairDataset``). rla_model: ``RLAConfig`` dict (latent_tokens/latent_dim are overridden per trial).
    trainer: ``TrainerConfig`` dict (lr, max_steps, val_every, run_name, checkpoint_dir overridden per trial).
    token_mean/token_std: (D,) per-dim token statistics for the model's normalisation (computed from
    ``train_dataset`` when None).
    """

    def train_one(latent_tokens: int, latent_dim: int, lr: float, max_steps: int, val_every: int,
                  batch_size: int | None, run_name: str, callback: Callable) -> Any:
        from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder, rla_loss
        from rla_pipeline.training.trainer import TrainerConfig, train

        model = ResidualLatentActionAutoencoder(
            RLAConfig.from_dict({**rla_model, "latent_tokens": int(latent_tokens), "latent_dim": int(latent_dim)})
        )
        mean, std = token_mean, token_std
        if mean is None or std is None:
            mean, std = dataset_token_stats(train_dataset)
        model.set_token_stats(mean, std)
        tcfg = {**trainer, "lr": float(lr), "max_steps": int(max_steps), "val_every": int(val_every),
                "run_name": run_name, "checkpoint_dir": None}
        if batch_size:
            tcfg["batch_size"] = int(batch_size)
        tcfg["log_every"] = min(int(tcfg.get("log_every", val_every)), int(val_every))
        tcfg["checkpoint_every"] = int(max_steps)  # no checkpoint_dir: nothing is written
        tcfg["progress"] = False
        return train(model, rla_loss, train_dataset, val_dataset, TrainerConfig.from_dict(tcfg),
                     callbacks=(callback,))

    return TrialData(train_one=train_one, describe={"train_pairs": len(train_dataset), "val_pairs": len(val_dataset)})


def apply_tuned_shape(model_params: dict, tuned: dict | None, use_tuned_shape: bool) -> dict:
    """The ``RLAConfig`` dict the rla pipeline should train: ``model_params`` with the tuned K, d when asked.

    use_tuned_shape False: ``model_params`` unchanged. True: ``latent_tokens``/``latent_dim`` from ``tuned`` (the
    ``rla_tuned_shape`` dataset); raises when the study never ran (``tuned`` None) rather than silently
    training the configured shape.
    """
    if not use_tuned_shape:
        return dict(model_params)
    if not tuned:
        raise ValueError("rla.use_tuned_shape is true but rla_tuned_shape is missing: run `kedro run --pipelines=tune`"
                         " first (or set rla.use_tuned_shape: false)")
    return {**model_params, "latent_tokens": int(tuned["latent_tokens"]), "latent_dim": int(tuned["latent_dim"])}


def dataset_token_stats(dataset, max_items: int = 512):
    """Per-dim mean/std (D,) of "s_t" tokens over up to ``max_items`` evenly spaced items."""
    import torch

    from rla_pipeline.models.rla import token_stats

    n = len(dataset)
    idx = sorted({int(i * n / min(n, max_items)) for i in range(min(n, max_items))})
    tokens = torch.stack([torch.as_tensor(dataset[i]["s_t"]).float() for i in idx])  # (n, N, D)
    return token_stats(tokens)


# --------------------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------------------
def _counted_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


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


def open_study(storage_url: str, cfg: TuneConfig, worker_seed: int | None = None):
    """Create or join the study ``cfg.study_name`` with heartbeat + retry of dead trials -> (study, created)."""
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
        study_name=cfg.study_name,
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


class _OverBudget(Exception):
    """Raised by a trial that was claimed after the budget was already met (it trains nothing)."""


def _budget_callback(n_trials: int):
    """Stop this worker once finished + running trials reach the budget (the others finish theirs)."""

    def cb(study, trial) -> None:
        if _n_claimed(study) >= n_trials:
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

    from rla_pipeline import tracking

    if not tracking.active():
        from rla_pipeline.hooks import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment(os.environ.get("RLA_MLFLOW_EXPERIMENT", "rla-pipeline"))
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
            _log_metrics({f"val_{cfg.metric}": value}, step=int(step))
            trial.report(value, int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"step {step}: val {cfg.metric}={value:.4f} above the median")

        with _trial_run(trial, parent_run_id, cfg) as _:
            _log_params({"shape": shape, "latent_tokens": k, "latent_dim": d, "latent_size": k * d, "lr": lr,
                         "max_steps": cfg.max_steps, **{f"data.{a}": b for a, b in data.describe.items()}})
            try:
                result = data.train_one(latent_tokens=k, latent_dim=d, lr=lr, max_steps=cfg.max_steps,
                                        val_every=cfg.val_every, batch_size=cfg.batch_size,
                                        run_name=f"{cfg.study_name}-trial-{trial.number}", callback=report)
            except optuna.TrialPruned:
                trial.set_user_attr("curve", curve)
                _set_tags({"optuna.state": "PRUNED"})
                raise
            final = getattr(result, "final_val", None) or {}
            value = float(final.get(cfg.metric, curve[-1][1] if curve else math.nan))
            if not math.isfinite(value):
                raise FloatingPointError(f"trial {trial.number}: val {cfg.metric} is {value}")
            trial.set_user_attr("curve", curve)
            _log_metrics({f"final_val_{cfg.metric}": value})
            _set_tags({"optuna.state": "COMPLETE"})
            return value

    return objective


@contextlib.contextmanager
def _trial_run(trial, parent_run_id: str | None, cfg: TuneConfig):
    if parent_run_id is None:
        yield None
        return
    import mlflow

    run = mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                           tags={"optuna.study": cfg.study_name, "optuna.trial": trial.number,
                                 "mlflow.parentRunId": parent_run_id})
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


def _log_params(d: dict) -> None:
    from rla_pipeline import tracking

    tracking.log_params(d)


def _log_metrics(d: dict, step: int | None = None) -> None:
    from rla_pipeline import tracking

    tracking.log_metrics(d, step=step)


def _set_tags(d: dict) -> None:
    from rla_pipeline import tracking

    tracking.set_tags(d)


def run_worker(storage_url: str, cfg: TuneConfig, data: TrialData, worker_seed: int | None = None):
    """Join the study and run trials until ``cfg.n_trials`` are COMPLETE or PRUNED (over all workers).

    Returns the study. Safe to run in several processes/machines at once on one storage.
    """
    import optuna

    seed = (cfg.seed + os.getpid()) % (2**31) if worker_seed is None else worker_seed
    study, created = open_study(storage_url, cfg, worker_seed=seed)
    if _n_counted(study) >= cfg.n_trials:
        logger.info("study %s already has %d finished trials: nothing to do", cfg.study_name, cfg.n_trials)
        return study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.monotonic()
    with _mlflow_parent(study, cfg, storage_url, created) as parent_id:
        objective = make_objective(data, cfg, parent_id)
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fail_stale_trials is "experimental"
                optuna.storages.fail_stale_trials(study)  # dead workers' trials -> FAIL + re-queued
            if _n_counted(study) >= cfg.n_trials:
                break
            left = None if cfg.timeout_s is None else cfg.timeout_s - (time.monotonic() - t0)
            if left is not None and left <= 0:
                logger.warning("tune worker timed out with %d/%d trials finished", _n_counted(study), cfg.n_trials)
                break
            if _n_claimed(study) >= cfg.n_trials:
                # The budget is met only counting RUNNING trials: other workers' (wait for them) or a dead
                # worker's (failed and re-queued by the heartbeat check above once its grace period is over).
                time.sleep(min(2.0, float(cfg.heartbeat_interval)))
                continue
            study.optimize(objective, n_trials=None, timeout=left, catch=(_OverBudget,),
                           callbacks=[_budget_callback(cfg.n_trials)], gc_after_trial=True)
    return study


def _n_counted(study) -> int:
    return len(study.get_trials(deepcopy=False, states=_counted_states()))


def _n_claimed(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(*_counted_states(), TrialState.RUNNING)))


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------
def trials_table(study):
    """One row per trial: number, state, shape, latent_tokens, latent_dim, latent_size, lr, value, steps, worker."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        shape = t.params.get("shape")
        k, d = parse_shape(shape) if shape else (None, None)
        steps = max(t.intermediate_values) if t.intermediate_values else None
        value = t.value if t.value is not None else (t.intermediate_values[steps] if steps is not None else None)
        rows.append({
            "number": t.number, "state": t.state.name, "shape": shape, "latent_tokens": k, "latent_dim": d,
            "latent_size": (k * d) if k else None, "lr": t.params.get("lr"), "value": value, "last_step": steps,
            "over_budget": bool(t.user_attrs.get("over_budget", False)),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
        })
    cols = ["number", "state", "shape", "latent_tokens", "latent_dim", "latent_size", "lr", "value", "last_step",
            "over_budget", "mlflow_run_id"]
    return pd.DataFrame(rows, columns=cols).sort_values("number").reset_index(drop=True)


def tuned_shape(study, cfg: TuneConfig, storage_url: str) -> dict[str, Any]:
    """The dict written as ``rla_tuned_shape``: what the rla pipeline reads when ``rla.use_tuned_shape: true``.

    Keys: latent_tokens, latent_dim, lr, best_value, metric, best_trial, study_name, storage, n_complete,
    n_pruned, trials (list of {number, state, shape, latent_size, lr, value}).
    """
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"study {cfg.study_name!r} has no COMPLETE trial: no shape to choose")
    best = study.best_trial
    k, d = parse_shape(best.params["shape"])
    table = trials_table(study)
    table = table[table["state"].isin(["COMPLETE", "PRUNED"])]
    return {
        "latent_tokens": k,
        "latent_dim": d,
        "lr": float(best.params["lr"]),
        "best_value": float(best.value),
        "metric": f"val_{cfg.metric}",
        "best_trial": int(best.number),
        "study_name": cfg.study_name,
        "storage": redact_url(storage_url),
        "n_complete": len(complete),
        "n_pruned": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        "trials": [
            {"number": int(r.number), "state": r.state, "shape": r.shape, "latent_size": int(r.latent_size),
             "lr": float(r.lr), "value": None if r.value is None or not math.isfinite(r.value) else float(r.value)}
            for r in table.itertuples()
        ],
    }


def tradeoff_figure(trials: list[dict], metric: str = "val_l1", best_trial: int | None = None):
    """Matplotlib figure: final (or last reported) validation error against latent size K*d, per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for state, marker, color in (("COMPLETE", "o", "tab:blue"), ("PRUNED", "x", "tab:gray")):
        pts = [t for t in trials if t["state"] == state and t.get("value") is not None]
        if pts:
            ax.scatter([t["latent_size"] for t in pts], [t["value"] for t in pts], marker=marker, c=color,
                       label=f"{state.lower()} ({len(pts)})")
    best = [t for t in trials if t["number"] == best_trial and t.get("value") is not None]
    if best:
        ax.scatter([best[0]["latent_size"]], [best[0]["value"]], s=180, facecolors="none", edgecolors="tab:red",
                   label=f"best: {best[0]['shape']}")
    # lower envelope: the best error reached at each latent size
    sizes = sorted({t["latent_size"] for t in trials if t["state"] == "COMPLETE" and t.get("value") is not None})
    if sizes:
        env = [min(t["value"] for t in trials if t["latent_size"] == s and t["state"] == "COMPLETE"
                   and t.get("value") is not None) for s in sizes]
        ax.plot(sizes, env, "-", c="tab:blue", alpha=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent size K x d (numbers per latent action)")
    ax.set_ylabel(f"held-out reconstruction {metric}")
    ax.set_title("RLA latent shape: error vs size")
    ax.grid(True, alpha=0.3)
    if trials:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def build_trial_data(feature_cache, episode_index, episode_splits, rla_params: dict, device: str = "auto"):
    """TrialData for RLA trials, built the way the rla pipeline builds its training (its params, splits, stats)."""
    from rla_pipeline.features.samples import SampleConfig, TokenPairDataset
    from rla_pipeline.stages.rla import RLAParams, episode_ids, sample_token_stats

    p = RLAParams.from_dict(rla_params)
    samples = SampleConfig.from_dict(p.samples)
    train_ids, val_ids = episode_ids(episode_splits, "train"), episode_ids(episode_splits, "val")
    if not train_ids or not val_ids:
        raise ValueError(f"tuning needs train and val episodes; episode_splits has {len(train_ids)} train, "
                         f"{len(val_ids)} val")
    train_ds = TokenPairDataset(feature_cache, episode_index, train_ids, samples)
    val_ds = TokenPairDataset(feature_cache, episode_index, val_ids, samples)
    model = {"num_tokens": train_ds.num_tokens, "token_dim": train_ds.token_dim, **p.model}
    if p.normalise_tokens:
        mean, std = sample_token_stats(feature_cache, train_ids, p.stats_max_frames, samples.seed)
    else:
        import torch

        mean, std = torch.zeros(train_ds.token_dim), torch.ones(train_ds.token_dim)
    return rla_trial_data(train_ds, val_ds, model, {"device": device, **p.trainer}, token_mean=mean, token_std=std)


# --------------------------------------------------------------------------------------------------------------
# CLI: extra workers
# --------------------------------------------------------------------------------------------------------------
def _kedro_trial_data(env: str | None, project: Path) -> tuple[TrialData, dict, dict]:
    """Load the tune pipeline's inputs from the project's Kedro catalog; -> (TrialData, params:tune, params:rla)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        catalog = session.load_context().catalog
        params = catalog.load("parameters")
        data = build_trial_data(
            catalog.load("feature_cache"), catalog.load("episode_index"), catalog.load("episode_splits"),
            params["rla"], params.get("device", "auto"),
        )
        return data, params.get("tune") or {}, params


def main(argv: list[str] | None = None) -> int:
    """Run one extra worker on a shared study (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m rla_pipeline.tuning.study", description=main.__doc__)
    ap.add_argument("--storage", help=f"Optuna RDB URL (default: ${STORAGE_ENV}, then tune.storage, then "
                                      "the project's data/06_models/optuna.db)")
    ap.add_argument("--study", help="study name (default: tune.study_name)")
    ap.add_argument("--n-trials", type=int, help="total COMPLETE+PRUNED trials of the study (default: tune.n_trials)")
    ap.add_argument("--env", default=None, help="Kedro env whose catalog/params give the data (e.g. test)")
    ap.add_argument("--project", default=".", help="Kedro project root (default: cwd)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    project = Path(args.project).resolve()
    data, tune_params, _ = _kedro_trial_data(args.env, project)
    over = {k: v for k, v in (("study_name", args.study), ("n_trials", args.n_trials)) if v is not None}
    cfg = TuneConfig.from_dict({**tune_params, **over})
    url = args.storage or resolve_storage(cfg.storage, sqlite_url(project / "data/06_models/optuna.db"))
    study = run_worker(url, cfg, data)
    logger.info("study %s: %d finished trials; best %s", cfg.study_name, _n_counted(study),
                study.best_trial.params if _n_counted(study) else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
