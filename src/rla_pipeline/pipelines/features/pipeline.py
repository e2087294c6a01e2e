"""``features``: episodes -> frozen DINO patch tokens (``feature_cache``) + ``feature_manifest``.

The cache handle is an input that the node fills (like ``episodes`` in ingestion); consumers order themselves
after this pipeline by taking ``feature_manifest`` as an input.
"""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.features import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.encode_episodes,
                inputs=["feature_cache", "episodes", "episode_index", "params:features", "params:device"],
                outputs="feature_manifest",
                name="encode_episodes",
            ),
        ],
        tags="features",
    )
