"""The tune stage: an Optuna study over the RLA latent shape K x d (and lr), every trial a real RLA training
built by ``stages.rla``'s builders and run by the shared trainer. The Optuna machinery is ``rla_pipeline.tuning``.
No Kedro here."""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from rla_pipeline.models.rla import RLAConfig
from rla_pipeline.stages.rla import RLAData, RLAStageConfig, build_rla_data, build_rla_model
from rla_pipeline.tuning.config import TuneConfig
from rla_pipeline.tuning.results import tradeoff_figure, trials_table, tuned_shape
from rla_pipeline.tuning.storage import resolve_storage
from rla_pipeline.tuning.study import TrialData, run_worker


def rla_trial_data(data: RLAData, model: RLAConfig, trainer: dict[str, Any]) -> TrialData:
    """TrialData that trains ``ResidualLatentActionAutoencoder`` with ``rla_loss`` through the shared trainer.

    data: the RLA's datasets + token stats (:func:`stages.rla.build_rla_data`); model: the RLA config (num_tokens,
    token_dim from the data, latent_tokens/latent_dim per trial); trainer: TrainerConfig fields (lr, max_steps,
    val_every, run_name are set per trial; no checkpoints: a trial is short and never resumed).
    """
    if data.val is None:
        raise ValueError("tuning needs validation token pairs (the objective is the validation metric)")

    def train_one(latent_tokens: int, latent_dim: int, lr: float, max_steps: int, val_every: int,
                  batch_size: int | None, run_name: str, callback: Callable) -> Any:
        from rla_pipeline.models.rla import rla_loss
        from rla_pipeline.training.trainer import TrainerConfig, train

        net = build_rla_model(data, model, (latent_tokens, latent_dim))
        tcfg = {**trainer, "lr": float(lr), "max_steps": int(max_steps), "val_every": int(val_every),
                "run_name": run_name, "checkpoint_dir": None}
        if batch_size:
            tcfg["batch_size"] = int(batch_size)
        tcfg["log_every"] = min(int(tcfg.get("log_every", val_every)), int(val_every))
        tcfg["checkpoint_every"] = int(max_steps)  # no checkpoint_dir: nothing is written
        tcfg["progress"] = False
        return train(net, rla_loss, data.train, data.val, TrainerConfig.from_dict(tcfg), callbacks=(callback,))

    return TrialData(train_one=train_one, describe={"train_pairs": len(data.train), "val_pairs": len(data.val)},
                     fingerprint=trial_data_fingerprint(data, model, trainer))


def trial_data_fingerprint(data: RLAData, model: RLAConfig, trainer: dict[str, Any]) -> str | None:
    """Digest of what every trial trains on and with: the token pairs' content (feature cache entries of the
    episode split), the token statistics, the RLA config and the trainer's numeric fields. Part of the study's
    key (``tuning.study.study_storage_name``). None when the datasets have no content fingerprint."""
    from rla_pipeline.training.config import HASHED_FIELDS
    from rla_pipeline.training.resume import dataset_fingerprint
    from rla_pipeline.utils.hashing import canonical, nested_digest

    train_fp, val_fp = dataset_fingerprint(data.train), dataset_fingerprint(data.val)
    if train_fp is None or val_fp is None:
        return None
    return nested_digest({"train": [train_fp, len(data.train)], "val": [val_fp, len(data.val)],
                          "token_stats": canonical(data.token_stats), "model": canonical(model),
                          "trainer": {k: trainer[k] for k in HASHED_FIELDS if k in trainer}})


def build_trial_data(feature_cache, episode_index: pd.DataFrame, episode_splits: pd.DataFrame, rla_params,
                     device: str = "auto") -> TrialData:
    """TrialData for RLA trials, built exactly as the rla stage builds its training (its params, splits, stats)."""
    p = RLAStageConfig.from_dict(rla_params)
    data = build_rla_data(feature_cache, episode_splits, episode_index, p, require_val=True)
    return rla_trial_data(data, p.model, {"device": device, **p.trainer})


def tune_rla_shape(optuna_storage: str, feature_cache, episode_index: pd.DataFrame, episode_splits: pd.DataFrame,
                   rla_params: dict, tune_params: dict, device: str) -> tuple[dict, Any, Any]:
    """Run (or resume) the study until ``tune.n_trials`` trials are finished.

    -> (rla_tuned_shape dict, rla_tuning_trials DataFrame, rla_tuning_tradeoff matplotlib Figure).
    """
    cfg = TuneConfig.from_dict(tune_params)
    url = resolve_storage(cfg.storage, optuna_storage)
    data = build_trial_data(feature_cache, episode_index, episode_splits, rla_params, device)
    study = run_worker(url, cfg, data)
    best = tuned_shape(study, cfg, url)
    return best, trials_table(study), tradeoff_figure(best["trials"], best["metric"], best["best_trial"])
