"""One extra tuning worker on a shared study, fed from the project's Kedro catalog.

    python -m rla_pipeline.pipelines.tune.worker --storage postgresql://user:pw@host/db --study rla_latent_shape \
        --n-trials 16 [--env test] [--project .]

The data (feature cache, episode index and splits) and the params come from the catalog of the project in
``--project``; the storage defaults to ``RLA_OPTUNA_STORAGE``, then ``tune.storage``, then the catalog's
``optuna_storage`` entry. This is the only worker command: ``rla_pipeline.tuning`` knows no Kedro and no stage.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run one extra worker on a shared study (see the module docstring)."""
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from rla_pipeline.hooks import tracking_uri
    from rla_pipeline.stages.tune import build_trial_data
    from rla_pipeline.tuning.config import TuneConfig
    from rla_pipeline.tuning.storage import STORAGE_ENV, resolve_storage
    from rla_pipeline.tuning.study import n_counted, run_worker

    ap = argparse.ArgumentParser(prog="python -m rla_pipeline.pipelines.tune.worker", description=main.__doc__)
    ap.add_argument("--storage", help=f"Optuna RDB URL (default: ${STORAGE_ENV}, then tune.storage, then the "
                                      "catalog's optuna_storage)")
    ap.add_argument("--study", help="study name (default: tune.study_name)")
    ap.add_argument("--n-trials", type=int, help="total COMPLETE+PRUNED trials of the study (default: tune.n_trials)")
    ap.add_argument("--env", default=None, help="Kedro env whose catalog/params give the data (e.g. test)")
    ap.add_argument("--project", default=".", help="Kedro project root (default: cwd)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    project = Path(args.project).resolve()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        catalog = session.load_context().catalog
        params = catalog.load("parameters")
        data = build_trial_data(catalog.load("feature_cache"), catalog.load("episode_index"),
                                catalog.load("episode_splits"), params["rla"], params.get("device", "auto"))
        default_storage = catalog.load("optuna_storage")
    over = {k: v for k, v in (("study_name", args.study), ("n_trials", args.n_trials)) if v is not None}
    cfg = TuneConfig.from_dict({**(params.get("tune") or {}), **over})
    url = args.storage or resolve_storage(cfg.storage, default_storage)
    mlflow.set_tracking_uri(tracking_uri())  # the project's MLflow store, as under `kedro run`
    study = run_worker(url, cfg, data)
    logger.info("study %s: %d finished trials; best %s", cfg.study_name, n_counted(study),
                study.best_trial.params if n_counted(study) else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
