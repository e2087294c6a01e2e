"""``pixel_decoder`` pipeline: split episodes -> train the DINO-to-RGB decoder -> reconstruction quality + PNG grid
(``stages.pixel_decoder``, tag ``pixel_decoder``), plus ``pixel_decoder_model_all_tasks``: the same recipe on the
same split with the held-out task's episodes added (the decoder WMRL acts through; ``pixel_decoder_model`` never
sees ``pixel_decoder.split.heldout_task`` and keeps the generalisation rows), then the world models' rollouts
decoded to RGB -> SSIM / PSNR table against the true frames + pictures of imagined rollouts
(``stages.world_model_images``, tag ``decoded_world_model``; needs the trained world models, so
``--tags=pixel_decoder`` runs the decoders alone)."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.stages import pixel_decoder
from rla_pipeline.stages import world_model_images


def decoder_pipeline() -> Pipeline:
    """The decoder itself (the paper's stage 1): needs only the episodes and their feature cache."""
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
            Node(pixel_decoder.train_pixel_decoder_all_tasks,
                 ["feature_cache", "episodes", "pixel_decoder_splits", "params:pixel_decoder", "params:device",
                  "params:checkpoint_root"], ["pixel_decoder_model_all_tasks", "pixel_decoder_all_tasks_training"],
                 name="train_pixel_decoder_all_tasks"),
        ],
        tags="pixel_decoder",
    )


def decoded_world_model_pipeline() -> Pipeline:
    """World-model rollouts decoded to RGB: the trained world models (catalog inputs) and the decoder."""
    return Pipeline(
        [
            Node(world_model_images.evaluate_decoded_world_models,
                 ["pixel_decoder_model", "world_model", "wm_baseline_deterministic",
                  "wm_baseline_deterministic_residual", "wm_baseline_absolute_flow", "feature_cache", "episodes",
                  "episode_splits", "episode_index", "pixel_decoder_splits", "params:world_model",
                  "params:pixel_decoder", "params:seed"],
                 ["wm_decoded_table", "wm_decoded_rollouts"], name="evaluate_decoded_world_models"),
        ],
        tags="decoded_world_model",
    )


def create_pipeline(**kwargs) -> Pipeline:
    return decoder_pipeline() + decoded_world_model_pipeline()
