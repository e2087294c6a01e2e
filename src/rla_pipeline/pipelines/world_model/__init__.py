"""``world_model``: RLA-WM (frozen RLA) + two baselines, trained alike, compared on held-out episodes."""
from .pipeline import create_pipeline  # noqa: F401
