"""Tune node: cached features + RLA params in; the best latent shape, the trial table and a trade-off plot out."""
from __future__ import annotations

from typing import Any

from rla_pipeline.tuning.study import build_trial_data  # noqa: F401  (re-exported: the node input builder)


def tune_rla_shape(optuna_storage: str, feature_cache, episode_index, episode_splits, rla_params: dict,
                   tune_params: dict, device: str) -> tuple[dict, Any, Any]:
    """Run (or resume) the study until ``tune.n_trials`` trials are finished.

    -> (rla_tuned_shape dict, rla_tuning_trials DataFrame, rla_tuning_tradeoff matplotlib Figure).
    """
    from rla_pipeline.tuning.study import (TuneConfig, resolve_storage, run_worker, trials_table, tradeoff_figure,
                                           tuned_shape)

    cfg = TuneConfig.from_dict(tune_params)
    url = resolve_storage(cfg.storage, optuna_storage)
    data = build_trial_data(feature_cache, episode_index, episode_splits, rla_params, device)
    study = run_worker(url, cfg, data)
    best = tuned_shape(study, cfg, url)
    return best, trials_table(study), tradeoff_figure(best["trials"], best["metric"], best["best_trial"])
