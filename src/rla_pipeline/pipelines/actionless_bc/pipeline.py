"""``actionless_bc``: BC-ResNet on labelled demos vs the same policy + a linear RLA latent head that also learns
from actionless videos (paper Table 2)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.actionless_bc import nodes

COMMON = ["params:actionless_bc", "params:tasks", "params:seed", "params:device"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_bc, ["episodes", "episode_index", *COMMON], ["bc_policy", "bc_training_history"],
                 name="train_bc_policy"),
            Node(nodes.train_bc_rla, ["episodes", "episode_index", "feature_cache", "rla_model", *COMMON],
                 ["bc_rla_policy", "bc_rla_training_history"], name="train_bc_rla_policy"),
        ],
        tags="actionless_bc",
    )
