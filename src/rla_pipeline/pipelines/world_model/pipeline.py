"""``world_model`` pipeline: RLA-WM (frozen ``rla_model``) + three baselines -> prediction table, plot, pictures
(``stages.world_model``), and ``rl_world_model``: the RLA-WM conditioned on commanded actions that WMRL steps
(``world_model`` itself unless ``world_model.conditioning`` is joint_positions)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import world_model as wm

_DATA = ["feature_cache", "episode_splits", "episode_index", "params:world_model", "params:device",
         "params:checkpoint_root", "params:seed"]
_BASE = [*_DATA, "params:rla"]  # the RLA's trainer block sets the baselines' "total" budget


def create_pipeline(for_rl: bool = True, **kwargs) -> Pipeline:
    """``for_rl``: include the ``rl_world_model`` node (``world_model_from_data`` has no policy stage: leaves it)."""
    rl = [Node(wm.world_model_for_rl, ["world_model", "rla_model", *_DATA], "rl_world_model",
               name="world_model_for_rl")] if for_rl else []
    return Pipeline(
        [
            *rl,
            check_parameters_node(),
            Node(wm.train_rla_world_model, ["rla_model", *_DATA], "world_model", name="train_rla_world_model"),
            Node(wm.train_deterministic_baseline, _BASE, "wm_baseline_deterministic",
                 name="train_deterministic_baseline"),
            Node(wm.train_deterministic_residual_baseline, _BASE, "wm_baseline_deterministic_residual",
                 name="train_deterministic_residual_baseline"),
            Node(wm.train_absolute_flow_baseline, _BASE, "wm_baseline_absolute_flow",
                 name="train_absolute_flow_baseline"),
            Node(
                wm.evaluate_world_models,
                inputs=["world_model", "wm_baseline_deterministic", "wm_baseline_absolute_flow", "feature_cache",
                        "episode_splits", "episode_index", "params:world_model", "params:seed",
                        "wm_baseline_deterministic_residual"],
                outputs=["wm_prediction_table", "wm_prediction_plot", "wm_feature_pictures"],
                name="evaluate_world_models",
            ),
        ],
        tags="world_model",
    )
