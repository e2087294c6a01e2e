"""``rla`` pipeline: split episodes -> train the RLA autoencoder -> evaluation tables (``stages.rla``)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import rla


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            check_parameters_node(),
            Node(rla.split_episodes, ["episode_index", "feature_manifest", "params:rla", "params:seed"],
                 "episode_splits", name="split_episodes"),
            Node(rla.train_rla, ["feature_cache", "episode_splits", "episode_index", "params:rla", "params:device",
                                 "rla_tuned_shape", "params:checkpoint_root", "params:seed"], "rla_model",
                 name="train_rla"),
            Node(rla.train_rla_heldout, ["feature_cache", "episode_splits", "episode_index", "params:rla",
                                         "params:device", "rla_tuned_shape", "params:checkpoint_root", "params:seed"],
                 "rla_heldout_model", name="train_rla_heldout"),
            Node(rla.evaluate_rla, ["rla_model", "feature_cache", "episode_splits", "params:rla", "rla_heldout_model"],
                 ["rla_metrics", "rla_generalisation", "rla_temporal_progression"], name="evaluate_rla"),
        ],
        tags="rla",
    )
