"""``actionless_bc``: BC-ResNet on labelled demos vs the same policy + a linear RLA latent head that also learns
from actionless videos (paper Table 2; ``stages.bc``)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import bc

COMMON = ["params:actionless_bc", "params:tasks", "params:seed", "params:device", "params:checkpoint_root"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            check_parameters_node(),
            Node(bc.train_bc, ["episodes", "episode_index", *COMMON], ["bc_policy", "bc_training_history"],
                 name="train_bc_policy"),
            Node(bc.train_bc_rla, ["episodes", "episode_index", "feature_cache", "rla_model", *COMMON],
                 ["bc_rla_policy", "bc_rla_training_history"], name="train_bc_rla_policy"),
        ],
        tags="actionless_bc",
    )
