"""Project pipelines: every folder under ``pipelines/`` plus ``wmrl``, the whole chain (the default)."""
from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# Order of the chain from raw videos to success-rate tables. Pipelines that do not exist yet are skipped.
WMRL_CHAIN = ("ingestion", "features", "rla", "world_model", "actionless_bc", "rl", "evaluation")


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    # The HTML report is built by the evaluation stage (its code lives in its own folder).
    if "report" in pipelines and "evaluation" in pipelines:
        pipelines["evaluation"] = pipelines["evaluation"] + pipelines.pop("report")
    wmrl = Pipeline([])
    for name in WMRL_CHAIN:
        if name in pipelines:
            wmrl += pipelines[name]
    pipelines["wmrl"] = wmrl
    pipelines["__default__"] = wmrl
    return pipelines
