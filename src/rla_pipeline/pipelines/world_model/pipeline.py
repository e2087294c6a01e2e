"""``world_model`` pipeline: RLA-WM (frozen ``rla_model``) + two baselines -> prediction table, plot, pictures."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.world_model import nodes

_DATA = ["feature_cache", "episode_splits", "episode_index", "params:world_model", "params:device"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_rla_world_model, inputs=["rla_model", *_DATA], outputs="world_model",
                 name="train_rla_world_model"),
            Node(nodes.train_deterministic_baseline, inputs=_DATA, outputs="wm_baseline_deterministic",
                 name="train_deterministic_baseline"),
            Node(nodes.train_absolute_flow_baseline, inputs=_DATA, outputs="wm_baseline_absolute_flow",
                 name="train_absolute_flow_baseline"),
            Node(
                nodes.evaluate_world_models,
                inputs=["world_model", "wm_baseline_deterministic", "wm_baseline_absolute_flow", "feature_cache",
                        "episode_splits", "episode_index", "params:world_model", "params:seed"],
                outputs=["wm_prediction_table", "wm_prediction_plot", "wm_feature_pictures"],
                name="evaluate_world_models",
            ),
        ],
        tags="world_model",
    )
