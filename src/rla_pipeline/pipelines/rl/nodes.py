"""Nodes of ``rl`` (WMRL, paper Table 3): token-BC warm start, then PPO inside the world model."""
from __future__ import annotations

import pandas as pd


def train_token_bc(feature_cache, episode_index: pd.DataFrame, params: dict, tasks: list[str], seed: int, device: str):
    """Cached demo tokens + actions -> TokenPolicy (+ history)."""
    from rla_pipeline.rl.stages import WMRLConfig, train_token_bc_stage

    return train_token_bc_stage(feature_cache, episode_index, tasks, WMRLConfig.from_dict(params), seed, device)


def train_wmrl(world_model, token_bc_policy, feature_cache, episode_index: pd.DataFrame, params: dict,
               tasks: list[str], seed: int, device: str):
    """PPO in the imagined env -> (wmrl_policy, ppo_history, imagined_env_calibration)."""
    from rla_pipeline.rl.stages import WMRLConfig, train_wmrl_stage

    return train_wmrl_stage(world_model, token_bc_policy, feature_cache, episode_index, tasks,
                            WMRLConfig.from_dict(params), seed, device)
