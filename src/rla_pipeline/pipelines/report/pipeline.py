"""report: every evaluation table/plot -> data/08_reporting/report.html."""
from kedro.pipeline import Node, Pipeline

from rla_pipeline.pipelines.parameters_check import check_parameters_node
from rla_pipeline.pipelines.report import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        check_parameters_node(),
        Node(
            nodes.build_html_report,
            inputs=[
                "bc_success_table", "wmrl_success_table", "wm_prediction_table", "wm_prediction_plot",
                "wm_feature_pictures", "rla_metrics", "rla_generalisation", "rla_temporal_progression",
                "rla_tuned_shape", "feature_manifest", "ingestion_summary", "run_provenance", "params:report",
                "wm_decoded_table", "wm_decoded_rollouts", "pixel_decoder_metrics", "pixel_decoder_grid",
            ],
            outputs="report_html",
            name="build_html_report",
        )
    ])
