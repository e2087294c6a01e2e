"""Every parameter block and the typed config it becomes; :func:`check_parameters` builds them all at once.

The pipelines run :func:`check_parameters` as their first node (``check_parameters``), so a typo anywhere in
``conf/<env>/parameters*.yml`` stops ``kedro run`` before any stage works, with the key, block and file named.
"""
from __future__ import annotations

from typing import Any

from rla_pipeline.episodes.sources.index import IngestionConfig
from rla_pipeline.episodes.sources.maniskill import SimulationConfig
from rla_pipeline.evaluation.report import ReportConfig
from rla_pipeline.features.config import FeaturesConfig
from rla_pipeline.stages.bc import ActionlessBCConfig
from rla_pipeline.stages.evaluation import EvaluationConfig
from rla_pipeline.stages.pixel_decoder import PixelDecoderParams
from rla_pipeline.stages.rla import RLAStageConfig
from rla_pipeline.stages.wmrl import WMRLConfig
from rla_pipeline.stages.world_model import WorldModelStageConfig
from rla_pipeline.tuning.config import TuneConfig
from rla_pipeline.utils.config import ConfigError, check_keys, from_dict

# block of conf/<env>/parameters_<block>.yml -> its config class
STAGE_CONFIGS: dict[str, Any] = {
    "ingestion": IngestionConfig,
    "features": FeaturesConfig,
    "rla": RLAStageConfig,
    "world_model": WorldModelStageConfig,
    "actionless_bc": ActionlessBCConfig,
    "rl": WMRLConfig,
    "evaluation": EvaluationConfig,
    "report": ReportConfig,
    "tune": TuneConfig,
    "pixel_decoder": PixelDecoderParams,  # conf/*/parameters_pixel_decoder.yml (without it every run stopped here)
}
# conf/<env>/parameters.yml: what every stage shares
GLOBAL_PARAMETERS = ("seed", "device", "tasks", "checkpoint_root")


def check_parameters(parameters: dict[str, Any]) -> None:
    """Build the typed config of every block in ``parameters`` (Kedro's ``parameters``); raise on the first that
    does not fit (unknown key, bad value) and on an unknown top-level key."""
    unknown = sorted(set(parameters) - set(STAGE_CONFIGS) - set(GLOBAL_PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown top-level parameter(s) {unknown}; known: "
                          f"{sorted([*STAGE_CONFIGS, *GLOBAL_PARAMETERS])}")
    for block, cls in STAGE_CONFIGS.items():
        if block in parameters:
            if cls is IngestionConfig:  # no from_dict of its own; its simulation block is a dict there
                cfg = from_dict(cls, parameters[block], where=block)
                check_keys(SimulationConfig, cfg.simulation, where="ingestion.simulation")
            else:
                cls.from_dict(parameters[block])
