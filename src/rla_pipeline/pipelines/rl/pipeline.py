"""``rl``: WMRL — behaviour-clone a token policy, then improve it with PPO inside the world model."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.rl import nodes

COMMON = ["params:rl", "params:tasks", "params:seed", "params:device"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_token_bc, ["feature_cache", "episode_index", *COMMON],
                 ["token_bc_policy", "token_bc_training_history"], name="train_token_bc_policy"),
            Node(nodes.train_wmrl, ["world_model", "token_bc_policy", "feature_cache", "episode_index", *COMMON],
                 ["wmrl_policy", "ppo_history", "imagined_env_calibration"], name="train_wmrl_policy"),
        ],
        tags="rl",
    )
