
from .pipeline import create_pipeline  # noqa: E402,F401

__all__ = ["create_pipeline"]
