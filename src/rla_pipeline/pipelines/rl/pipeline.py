"""``rl``: WMRL — behaviour-clone a token policy, then improve it with PPO inside the world model
(``stages.wmrl``)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import wmrl

COMMON = ["params:rl", "params:tasks", "params:seed", "params:device"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            check_parameters_node(),
            Node(wmrl.train_token_bc, ["feature_cache", "episode_index", *COMMON, "params:checkpoint_root"],
                 ["token_bc_policy", "token_bc_training_history"], name="train_token_bc_policy"),
            Node(wmrl.train_wmrl, ["rl_world_model", "token_bc_policy", "feature_cache", "episode_index", *COMMON],
                 ["wmrl_policy", "ppo_history", "imagined_env_calibration"], name="train_wmrl_policy"),
        ],
        tags="rl",
    )
