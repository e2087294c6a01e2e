"""Nodes of the ``rla`` pipeline: thin wrappers over :mod:`rla_pipeline.stages.rla`."""
from __future__ import annotations

import pandas as pd

from rla_pipeline.stages import rla as stage


def split_episodes(episode_index: pd.DataFrame, feature_manifest: pd.DataFrame, params: dict, seed: int) -> pd.DataFrame:
    """Deterministic train/val/heldout_task split of the cached episodes -> episode_splits."""
    return stage.split_episodes(episode_index, feature_manifest, params, seed)


def train_rla(feature_cache, episode_splits: pd.DataFrame, episode_index: pd.DataFrame, params: dict, device: str,
              rla_tuned_shape: dict | None = None):
    """Train the RLA autoencoder (the tuned latent shape when ``rla.use_tuned_shape``) -> rla_model."""
    return stage.train_rla(feature_cache, episode_splits, episode_index, params, device, rla_tuned_shape)


def evaluate_rla(rla_model, feature_cache, episode_splits: pd.DataFrame, params: dict):
    """-> (rla_metrics, rla_generalisation, rla_temporal_progression) tables."""
    return stage.evaluate_rla(rla_model, feature_cache, episode_splits, params)
