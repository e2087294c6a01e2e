"""tune: an Optuna study over the RLA latent shape (see docs/tuning.md)."""
