"""``rl``: WMRL — PPO inside the world model, started from a behaviour-cloned policy (``stages.wmrl``).

``rl.policy`` bc_resnet (default, the paper's): the start policy is actionless_bc's ``bc_policy`` acting on the
pixel decoder's RGB of the imagined states: ``pixel_decoder_model_all_tasks``, the decoder trained on every task
(``pixel_decoder_model`` holds ``pixel_decoder.split.heldout_task`` out, a Table 3 task); its training record
``pixel_decoder_all_tasks_training`` lets ``train_wmrl`` check that. ``token``: a TokenPolicy behaviour-cloned here
on cached DINO tokens. Kedro graphs are static, so both modes take the same inputs (``bc_policy`` and the decoder
are built by the wmrl chain either way); the mode decides what the nodes do with them.
"""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import wmrl

COMMON = ["params:rl", "params:tasks", "params:seed", "params:device"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            check_parameters_node(),
            Node(wmrl.start_policy, ["feature_cache", "episode_index", "bc_policy", *COMMON, "params:checkpoint_root"],
                 ["wmrl_start_policy", "wmrl_start_training_history"], name="wmrl_start_policy"),
            Node(wmrl.train_wmrl, ["rl_world_model", "wmrl_start_policy", "feature_cache", "episode_index", *COMMON,
                                   "pixel_decoder_model_all_tasks", "episodes", "params:evaluation",
                                   "pixel_decoder_all_tasks_training"],
                 ["wmrl_policy", "ppo_history", "imagined_env_calibration"], name="train_wmrl_policy"),
        ],
        tags="rl",
    )
