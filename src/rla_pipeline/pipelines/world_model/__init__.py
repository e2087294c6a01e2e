"""``world_model``: RLA-WM (frozen RLA) + two baselines, trained alike, compared on held-out episodes."""
