"""Report node: loaded datasets in, one self-contained HTML string out."""
from __future__ import annotations

from typing import Any

import pandas as pd


def build_html_report(
    bc_success_table: pd.DataFrame,
    wmrl_success_table: pd.DataFrame,
    wm_prediction_table: pd.DataFrame,
    wm_prediction_plot: Any,
    wm_feature_pictures: Any,
    rla_metrics: pd.DataFrame,
    rla_generalisation: pd.DataFrame,
    rla_temporal_progression: pd.DataFrame,
    rla_tuned_shape: dict | None,
    feature_manifest: pd.DataFrame,
    ingestion_summary: pd.DataFrame,
    run_provenance: dict,
    report_params: dict,
    wm_decoded_table: pd.DataFrame | None = None,
    wm_decoded_rollouts: Any = None,
    pixel_decoder_metrics: pd.DataFrame | None = None,
    pixel_decoder_grid: Any = None,
) -> str:
    """All evaluation outputs -> ``report_html`` (tuning section says "not run" when ``rla_tuned_shape`` is None;
    the decoded-prediction parts say "not available" when None)."""
    from rla_pipeline import tracking
    from rla_pipeline.evaluation.report import ReportConfig, build_report, provenance_from

    return build_report(
        provenance=provenance_from(feature_manifest, run_provenance, tracking.active_run_id()),
        bc_success_table=bc_success_table,
        wmrl_success_table=wmrl_success_table,
        wm_prediction_table=wm_prediction_table,
        wm_prediction_plot=wm_prediction_plot,
        wm_feature_pictures=wm_feature_pictures,
        rla_metrics=rla_metrics,
        rla_generalisation=rla_generalisation,
        rla_temporal_progression=rla_temporal_progression,
        tuned_shape=rla_tuned_shape,
        ingestion_summary=ingestion_summary,
        config=ReportConfig.from_dict(report_params),
        wm_decoded_table=wm_decoded_table,
        wm_decoded_rollouts=wm_decoded_rollouts,
        pixel_decoder_metrics=pixel_decoder_metrics,
        pixel_decoder_grid=pixel_decoder_grid,
    )
