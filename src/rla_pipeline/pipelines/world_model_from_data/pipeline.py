"""``world_model_from_data``: your own recordings (LeRobot datasets, video folders; ManiSkill episodes too when
``ingestion.run_simulation`` is true) -> DINO features -> RLA -> the three world models and their prediction
evaluation (in tokens, and decoded to RGB by the DINO-to-RGB decoder) -> the report. No policy and no simulator
stage: nothing here needs ManiSkill.

    kedro run --pipelines=world_model_from_data
"""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.features.pipeline import create_pipeline as features
from rla_pipeline.pipelines.ingestion.pipeline import create_pipeline as ingestion
from rla_pipeline.pipelines.pixel_decoder.pipeline import create_pipeline as pixel_decoder
from rla_pipeline.pipelines.rla.pipeline import create_pipeline as rla
from rla_pipeline.pipelines.world_model.pipeline import create_pipeline as world_model
from rla_pipeline.pipelines.world_model_from_data import nodes


def create_pipeline(**kwargs) -> Pipeline:
    report = Pipeline([
        Node(
            nodes.build_data_report,
            inputs=["wm_prediction_table", "wm_prediction_plot", "wm_feature_pictures", "rla_metrics",
                    "rla_generalisation", "rla_temporal_progression", "rla_tuned_shape", "feature_manifest",
                    "ingestion_summary", "run_provenance", "params:report", "wm_decoded_table",
                    "wm_decoded_rollouts", "pixel_decoder_metrics", "pixel_decoder_grid"],
            outputs="report_html",
            name="build_data_report",
        )
    ])
    return ingestion() + features() + rla() + world_model(for_rl=False) + pixel_decoder() + report
