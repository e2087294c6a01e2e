"""Optuna machinery for the latent-shape study: ``config`` (TuneConfig), ``storage`` (URL, RDB storage, opening the
study), ``study`` (workers, budget, pruning, MLflow runs) and ``results`` (trials table, best shape, plot).
What a trial trains comes from ``stages.tune``; this package knows no stage."""
