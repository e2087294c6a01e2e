"""``rla`` pipeline: split episodes -> train the RLA autoencoder -> evaluation tables."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.rla import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.split_episodes,
                inputs=["episode_index", "feature_manifest", "params:rla", "params:seed"],
                outputs="episode_splits",
                name="split_episodes",
            ),
            Node(
                nodes.train_rla,
                inputs=["feature_cache", "episode_splits", "episode_index", "params:rla", "params:device", "rla_tuned_shape"],
                outputs="rla_model",
                name="train_rla",
            ),
            Node(
                nodes.evaluate_rla,
                inputs=["rla_model", "feature_cache", "episode_splits", "params:rla"],
                outputs=["rla_metrics", "rla_generalisation", "rla_temporal_progression"],
                name="evaluate_rla",
            ),
        ],
        tags="rla",
    )
