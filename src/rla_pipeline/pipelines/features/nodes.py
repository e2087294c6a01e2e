"""Thin node of the ``features`` pipeline: build the encoder from parameters and bring the cache up to date."""
from __future__ import annotations

from typing import Any

import pandas as pd


def encode_episodes(feature_cache, episodes, episode_index: pd.DataFrame, features: dict[str, Any], device: str) -> pd.DataFrame:
    """Encode every episode of ``episode_index`` that the cache lacks; returns the feature manifest (one row per episode).

    Re-running with unchanged episodes and parameters encodes nothing (content-addressed entries).
    """
    from rla_pipeline import tracking
    from rla_pipeline.features.config import FeaturesConfig
    from rla_pipeline.features.encoder import DinoEncoder

    cfg = FeaturesConfig.from_dict(features).with_device(device)
    encoder = DinoEncoder(cfg.encoder)
    manifest = feature_cache.update(episodes, encoder, episode_index["episode_id"].tolist(), cfg.cache)
    tracking.log_metrics({f"features.{k}": v for k, v in feature_cache.last_stats.items()})
    return manifest
