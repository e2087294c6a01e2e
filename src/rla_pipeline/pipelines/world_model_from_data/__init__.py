"""``world_model_from_data``: your own recordings -> features -> RLA -> world models -> report (no simulator)."""
from .pipeline import create_pipeline  # noqa: F401
