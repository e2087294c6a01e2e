"""Nodes of ``actionless_bc``: BC-ResNet and BC+RLA (paper Table 2). Library code: ``rla_pipeline.rl.stages``."""
from __future__ import annotations

import pandas as pd


def train_bc(episodes, episode_index: pd.DataFrame, params: dict, tasks: list[str], seed: int, device: str):
    """Labelled demos -> BC-ResNet policy (+ its training history)."""
    from rla_pipeline.rl.stages import ActionlessBCConfig, train_bc_stage

    return train_bc_stage(episodes, episode_index, tasks, ActionlessBCConfig.from_dict(params), seed, device,
                          run_name="bc_policy")


def train_bc_rla(episodes, episode_index: pd.DataFrame, feature_cache, rla_model, params: dict, tasks: list[str],
                 seed: int, device: str):
    """Labelled demos + actionless videos (z targets from the frozen RLA encoder) -> BC+RLA policy (+ history)."""
    from rla_pipeline.rl.stages import ActionlessBCConfig, train_bc_stage

    return train_bc_stage(episodes, episode_index, tasks, ActionlessBCConfig.from_dict(params), seed, device,
                          run_name="bc_rla_policy", cache=feature_cache, rla=rla_model)
