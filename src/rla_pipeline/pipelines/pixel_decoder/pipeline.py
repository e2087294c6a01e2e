"""``pixel_decoder`` pipeline: split episodes -> train the DINO-to-RGB decoder -> reconstruction quality + PNG grid."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.pixel_decoder import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.split_pixel_decoder_episodes,
                inputs=["episode_index", "feature_manifest", "params:pixel_decoder", "params:seed"],
                outputs="pixel_decoder_splits",
                name="split_pixel_decoder_episodes",
            ),
            Node(
                nodes.train_pixel_decoder,
                inputs=["feature_cache", "episodes", "pixel_decoder_splits", "params:pixel_decoder", "params:device"],
                outputs="pixel_decoder_model",
                name="train_pixel_decoder",
            ),
            Node(
                nodes.evaluate_pixel_decoder,
                inputs=["pixel_decoder_model", "feature_cache", "episodes", "pixel_decoder_splits",
                        "params:pixel_decoder"],
                outputs=["pixel_decoder_metrics", "pixel_decoder_grid"],
                name="evaluate_pixel_decoder",
            ),
        ],
        tags="pixel_decoder",
    )
