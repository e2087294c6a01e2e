"""``rla``: episode splits -> RLA autoencoder (trainer) -> reconstruction / generalisation / temporal-progression tables."""
