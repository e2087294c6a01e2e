"""Project pipelines: every folder under ``pipelines/``; ``wmrl`` (the whole chain) is the default.

``pipelines/wmrl`` composes the stages itself, so ``kedro run --pipelines=wmrl`` works with Kedro 1.x's
selective loading (the CLI asks ``find_pipelines`` for the requested package only).
"""
from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    if "wmrl" in pipelines:
        pipelines["__default__"] = pipelines["wmrl"]
    return pipelines
