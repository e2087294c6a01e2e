"""The report of the data-only path: ingestion, features, RLA and world models; no simulator sections."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

SIM_NOTE = ("not run: `world_model_from_data` trains on recorded episodes only (no simulator); the success tables "
            "come from `kedro run --pipelines=wmrl` with simulated tasks")


def build_data_report(wm_prediction_table: pd.DataFrame, wm_prediction_plot: Any, wm_feature_pictures: Any,
                      rla_metrics: pd.DataFrame, rla_generalisation: pd.DataFrame,
                      rla_temporal_progression: pd.DataFrame, rla_tuned_shape: dict | None,
                      feature_manifest: pd.DataFrame, ingestion_summary: pd.DataFrame, run_provenance: dict,
                      report_params: dict, wm_decoded_table: pd.DataFrame | None = None,
                      wm_decoded_rollouts: Any = None, pixel_decoder_metrics: pd.DataFrame | None = None,
                      pixel_decoder_grid: Any = None) -> str:
    """``report_html`` without the policy success tables (they need the simulator; their sections say so)."""
    from rla_pipeline.pipelines.report.nodes import build_html_report

    logger.info("success tables %s", SIM_NOTE)
    return build_html_report(None, None, wm_prediction_table, wm_prediction_plot, wm_feature_pictures, rla_metrics,
                             rla_generalisation, rla_temporal_progression, rla_tuned_shape, feature_manifest,
                             ingestion_summary, run_provenance, report_params,
                             wm_decoded_table=wm_decoded_table, wm_decoded_rollouts=wm_decoded_rollouts,
                             pixel_decoder_metrics=pixel_decoder_metrics, pixel_decoder_grid=pixel_decoder_grid)
