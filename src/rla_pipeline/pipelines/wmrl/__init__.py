"""``wmrl``: ingestion -> features -> rla -> world_model (+ pixel_decoder) -> actionless_bc -> rl -> evaluation (+ report)."""
from .pipeline import create_pipeline  # noqa: F401

__all__ = ["create_pipeline"]
