"""Tune node: cached features + RLA params in; the best latent shape, the trial table and a trade-off plot out."""
from __future__ import annotations

from typing import Any


def build_trial_data(feature_cache, episode_index, episode_splits, rla_params: dict, device: str = "auto"):
    """TrialData for RLA trials, built the way the rla pipeline builds its training (its params, splits, stats)."""
    from rla_pipeline.features.samples import SampleConfig, TokenPairDataset
    from rla_pipeline.pipelines.rla.nodes import RLAParams, _ids, sample_token_stats
    from rla_pipeline.tuning.study import rla_trial_data

    p = RLAParams.from_dict(rla_params)
    samples = SampleConfig.from_dict(p.samples)
    train_ids, val_ids = _ids(episode_splits, "train"), _ids(episode_splits, "val")
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
