"""The ``ingestion`` pipeline: simulator episodes, video folders and LeRobot datasets -> one episode store + index."""
from rla_pipeline.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
