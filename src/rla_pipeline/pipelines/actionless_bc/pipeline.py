"""``actionless_bc``: BC-ResNet on labelled demos vs the same policy + a linear RLA latent head that also learns
from actionless videos (paper Table 2; ``stages.bc``).

Both nodes also take the feature cache, ``pixel_decoder_model_all_tasks`` (WMRL's decoder, from the
``pixel_decoder`` pipeline) and ``params:evaluation`` (the simulator camera's size): with
``actionless_bc.decoded_copies`` on, every labelled episode is trained on a second time as the decoder's RGB of its
cached DINO tokens, the frames WMRL's policy acts on in imagination. Kedro graphs are static, so the inputs are
the same with the option off (then unused)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import bc

COMMON = ["params:actionless_bc", "params:tasks", "params:seed", "params:device", "params:checkpoint_root"]
DECODED = ["pixel_decoder_model_all_tasks", "params:evaluation"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            check_parameters_node(),
            Node(bc.train_bc, ["episodes", "episode_index", *COMMON, "feature_cache", *DECODED],
                 ["bc_policy", "bc_training_history"], name="train_bc_policy"),
            Node(bc.train_bc_rla, ["episodes", "episode_index", "feature_cache", "rla_model", *COMMON, *DECODED],
                 ["bc_rla_policy", "bc_rla_training_history"], name="train_bc_rla_policy"),
        ],
        tags="actionless_bc",
    )
