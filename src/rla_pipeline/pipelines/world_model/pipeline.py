"""``world_model`` pipeline: RLA-WM (frozen ``rla_model``) + three baselines -> prediction table, plot, pictures
(``stages.world_model``)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import world_model as wm

_DATA = ["feature_cache", "episode_splits", "episode_index", "params:world_model", "params:device",
         "params:checkpoint_root", "params:seed"]
_BASE = [*_DATA, "params:rla"]  # the RLA's trainer block sets the baselines' "total" budget


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
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
