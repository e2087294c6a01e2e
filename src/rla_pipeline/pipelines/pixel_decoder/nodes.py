"""Nodes of the ``pixel_decoder`` pipeline: thin wrappers over :mod:`rla_pipeline.stages.pixel_decoder`."""
from __future__ import annotations

import pandas as pd

from rla_pipeline.stages import pixel_decoder as stage


def split_pixel_decoder_episodes(episode_index: pd.DataFrame, feature_manifest: pd.DataFrame, params: dict,
                                 seed: int) -> pd.DataFrame:
    """Deterministic train/val/heldout_task split of the cached episodes -> pixel_decoder_splits."""
    return stage.split_pixel_decoder_episodes(episode_index, feature_manifest, params, seed)


def train_pixel_decoder(feature_cache, episodes, pixel_decoder_splits: pd.DataFrame, params: dict, device: str):
    """Train the DINO-to-RGB decoder on (tokens, frame) pairs of the train split -> pixel_decoder_model."""
    return stage.train_pixel_decoder(feature_cache, episodes, pixel_decoder_splits, params, device)


def evaluate_pixel_decoder(pixel_decoder_model, feature_cache, episodes, pixel_decoder_splits: pd.DataFrame,
                           params: dict):
    """-> (pixel_decoder_metrics table, pixel_decoder_grid figure)."""
    return stage.evaluate_pixel_decoder(pixel_decoder_model, feature_cache, episodes, pixel_decoder_splits, params)
