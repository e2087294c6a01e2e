"""What a study gives back: the trials table, the best latent shape (``rla_tuned_shape``) and the trade-off plot."""
from __future__ import annotations

import math
from typing import Any

from rla_pipeline.tuning.config import TuneConfig, parse_shape
from rla_pipeline.tuning.storage import redact_url


def trials_table(study):
    """One row per trial: number, state, shape, latent_tokens, latent_dim, latent_size, lr, value, steps, worker."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        shape = t.params.get("shape")
        k, d = parse_shape(shape) if shape else (None, None)
        steps = max(t.intermediate_values) if t.intermediate_values else None
        value = t.value if t.value is not None else (t.intermediate_values[steps] if steps is not None else None)
        rows.append({
            "number": t.number, "state": t.state.name, "shape": shape, "latent_tokens": k, "latent_dim": d,
            "latent_size": (k * d) if k else None, "lr": t.params.get("lr"), "value": value, "last_step": steps,
            "over_budget": bool(t.user_attrs.get("over_budget", False)),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
        })
    cols = ["number", "state", "shape", "latent_tokens", "latent_dim", "latent_size", "lr", "value", "last_step",
            "over_budget", "mlflow_run_id"]
    return pd.DataFrame(rows, columns=cols).sort_values("number").reset_index(drop=True)


def tuned_shape(study, cfg: TuneConfig, storage_url: str) -> dict[str, Any]:
    """The dict written as ``rla_tuned_shape``: what the rla pipeline reads when ``rla.use_tuned_shape: true``.

    Keys: latent_tokens, latent_dim, lr, best_value, metric, best_trial, study_name, storage, n_complete,
    n_pruned, trials (list of {number, state, shape, latent_size, lr, value}).
    """
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"study {study.study_name!r} has no COMPLETE trial: no shape to choose")
    best = study.best_trial
    k, d = parse_shape(best.params["shape"])
    table = trials_table(study)
    table = table[table["state"].isin(["COMPLETE", "PRUNED"])]
    return {
        "latent_tokens": k,
        "latent_dim": d,
        "lr": float(best.params["lr"]),
        "best_value": float(best.value),
        "metric": f"val_{cfg.metric}",
        "best_trial": int(best.number),
        "study_name": study.study_name,  # the keyed name in the storage (tune.study_name + data/space key)
        "storage": portable_url(storage_url),
        "n_complete": len(complete),
        "n_pruned": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        "trials": [
            {"number": int(r.number), "state": r.state, "shape": r.shape, "latent_size": int(r.latent_size),
             "lr": float(r.lr), "value": None if r.value is None or not math.isfinite(r.value) else float(r.value)}
            for r in table.itertuples()
        ],
    }


def tradeoff_figure(trials: list[dict], metric: str = "val_l1", best_trial: int | None = None):
    """Matplotlib figure: final (or last reported) validation error against latent size K*d, per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for state, marker, color in (("COMPLETE", "o", "tab:blue"), ("PRUNED", "x", "tab:gray")):
        pts = [t for t in trials if t["state"] == state and t.get("value") is not None]
        if pts:
            ax.scatter([t["latent_size"] for t in pts], [t["value"] for t in pts], marker=marker, c=color,
                       label=f"{state.lower()} ({len(pts)})")
    best = [t for t in trials if t["number"] == best_trial and t.get("value") is not None]
    if best:
        ax.scatter([best[0]["latent_size"]], [best[0]["value"]], s=180, facecolors="none", edgecolors="tab:red",
                   label=f"best: {best[0]['shape']}")
    # lower envelope: the best error reached at each latent size
    sizes = sorted({t["latent_size"] for t in trials if t["state"] == "COMPLETE" and t.get("value") is not None})
    if sizes:
        env = [min(t["value"] for t in trials if t["latent_size"] == s and t["state"] == "COMPLETE"
                   and t.get("value") is not None) for s in sizes]
        ax.plot(sizes, env, "-", c="tab:blue", alpha=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent size K x d (numbers per latent action)")
    ax.set_ylabel(f"held-out reconstruction {metric}")
    ax.set_title("RLA latent shape: error vs size")
    ax.grid(True, alpha=0.3)
    if trials:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def portable_url(url: str) -> str:
    """``redact_url``, and an sqlite file under the working directory as a relative path: ``rla_tuned_shape`` is a
    DVC output, and an absolute path would make its hash depend on where the clone lives."""
    import os
    from pathlib import Path

    url = redact_url(url)
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path = Path(url[len(prefix):])
        try:
            return prefix + path.resolve().relative_to(Path(os.getcwd()).resolve()).as_posix()
        except ValueError:
            return url
    return url
