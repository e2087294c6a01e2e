"""``rla``: episode splits -> RLA autoencoder (trainer) -> reconstruction / generalisation / temporal-progression tables."""
from .pipeline import create_pipeline  # noqa: F401
