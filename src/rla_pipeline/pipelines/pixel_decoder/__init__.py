"""``pixel_decoder``: cached DINO tokens + episode frames -> DINO-to-RGB decoder (trainer) -> reconstruction quality."""
from .pipeline import create_pipeline  # noqa: F401
