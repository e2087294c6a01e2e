"""``pixel_decoder`` pipeline: split episodes -> train the DINO-to-RGB decoder -> reconstruction quality + PNG grid
(``stages.pixel_decoder``)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import pixel_decoder


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            check_parameters_node(),
            Node(pixel_decoder.split_pixel_decoder_episodes,
                 ["episode_index", "feature_manifest", "params:pixel_decoder", "params:seed"],
                 "pixel_decoder_splits", name="split_pixel_decoder_episodes"),
            Node(pixel_decoder.train_pixel_decoder,
                 ["feature_cache", "episodes", "pixel_decoder_splits", "params:pixel_decoder", "params:device",
                  "params:checkpoint_root"], "pixel_decoder_model", name="train_pixel_decoder"),
            Node(pixel_decoder.evaluate_pixel_decoder,
                 ["pixel_decoder_model", "feature_cache", "episodes", "pixel_decoder_splits", "params:pixel_decoder"],
                 ["pixel_decoder_metrics", "pixel_decoder_grid"], name="evaluate_pixel_decoder"),
        ],
        tags="pixel_decoder",
    )
