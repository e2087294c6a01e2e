"""Print the tables of a finished `kedro run --pipelines=wmrl` as Markdown (what docs/results.md quotes).

    python scripts/results_markdown.py [--data data] [--tracking-uri sqlite:///mlflow.db] > /tmp/run.md

Reads the Parquet tables under ``<data>/08_reporting`` (and the per-node wall times of the latest ``wmrl`` run in
the MLflow store, ``node_seconds.*``) and prints one section per stage: data, RLA (seen tasks and the held-out
task, temporal progression with its shuffled-z control), pixel decoder, world models (token L1 ratio to copy and
decoded SSIM / PSNR, each with its episode-bootstrap 95 % interval), WMRL calibration, speed, Tables 2 and 3.
Nothing is computed here that the pipeline did not write; the script only formats.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from rla_pipeline.evaluation.intervals import interval_cell


def md(df: pd.DataFrame, digits: int = 3) -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.{digits}f}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def ci(v: float, lo: float, hi: float, digits: int = 2, episodes=None) -> str:
    """``v [lo, hi]``; ``v [n/a (1 episode)]`` when the bootstrap gave no interval (fewer than 2 episodes)."""
    return interval_cell(v, lo, hi, episodes, digits=digits)


def demo_rate_cells(s: pd.DataFrame) -> pd.DataFrame:
    """The ingestion summary with ``demo_success_rate`` as text: "unknown" for demos whose outcome nobody recorded
    (NaN), "–" for the kinds it does not apply to, else the rate."""
    if "demo_success_rate" not in s:
        return s
    rate = [("unknown" if k == "demo" else "–") if pd.isna(v) else f"{v:.3f}"
            for k, v in zip(s["kind"], s["demo_success_rate"])]
    return s.assign(demo_success_rate=rate)


def read(rep: Path, name: str) -> pd.DataFrame | None:
    f = rep / f"{name}.parquet"
    return pd.read_parquet(f) if f.exists() else None


def node_times(uri: str | None) -> "tuple[pd.DataFrame, object] | None":
    """(minutes per node, the run) of the latest `wmrl` run in the store, or None."""
    try:
        from mlflow import MlflowClient
    except ImportError:  # pragma: no cover
        return None
    client = MlflowClient(uri) if uri else MlflowClient()
    exp = client.get_experiment_by_name(os.environ.get("RLA_MLFLOW_EXPERIMENT", "rla-pipeline"))
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`kedro.pipelines` = 'wmrl'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    m = {k.removeprefix("node_seconds."): v for k, v in runs[0].data.metrics.items() if k.startswith("node_seconds.")}
    df = pd.DataFrame({"node": list(m), "minutes": [v / 60 for v in m.values()]})
    df = df.sort_values("minutes", ascending=False)
    total = pd.DataFrame({"node": ["(sum of nodes)"], "minutes": [df["minutes"].sum()]})
    return pd.concat([df, total], ignore_index=True), runs[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("RLA_DATA_ROOT", "data"))
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    a = ap.parse_args(argv)
    rep = Path(a.data) / "08_reporting"
    p = print

    got = node_times(a.tracking_uri or f"sqlite:///{Path('mlflow.db').resolve()}")
    if got is not None:
        times, run = got
        p(f"## Wall time per node (MLflow run {run.info.run_id}, status {run.info.status})\n")
        p(md(times, 2) + "\n")

    s = read(rep, "ingestion_summary")
    if s is not None:
        p("## Data (`ingestion_summary`)\n")
        p(md(demo_rate_cells(s)) + "\n")

    for name, title in (("rla_metrics", "RLA, val episodes of the trained tasks (`rla_metrics`)"),
                        ("rla_generalisation", "RLA trained without the held-out task, scored on it (`rla_generalisation`)")):
        t = read(rep, name)
        if t is not None:
            p(f"## {title}\n")
            p(md(t[["split", "h", "pairs", "rla_l1", "copy_l1", "ratio"]], 4) + "\n")
    t = read(rep, "rla_temporal_progression")
    if t is not None:
        p("## Temporal progression (claim 1.3) with its shuffled-z control\n")
        if "progress_at_1_diff" in t:  # one row per h: true z - shuffled z with episode-bootstrap intervals
            cols = ["h", "pairs", "episodes", "donors", "decoder_over_copy", "progress_at_1", "progress_at_1_shuffled_z",
                    "progress_at_1_diff", "progress_at_1_diff_ci_low", "progress_at_1_diff_ci_high", "spearman_diff",
                    "spearman_diff_ci_low", "spearman_diff_ci_high", "verdict"]
            p(md(t[[c for c in cols if c in t]], 3) + "\n")
        else:  # tables written before the per-h summary: one row per pair
            p(f"mean Spearman over {len(t)} pairs: true z {t['spearman'].mean():.3f}, "
              f"shuffled z {t['spearman_shuffled_z'].mean():.3f}\n")

    t = read(rep, "pixel_decoder_metrics")
    if t is not None:
        p("## DINO-to-RGB decoder (`pixel_decoder_metrics`)\n")
        p(md(t[[c for c in ("split", "method", "episodes", "frames", "psnr", "ssim", "lpips_status") if c in t]]) + "\n")

    t = read(rep, "wm_prediction_table")
    if t is not None:
        p("## World models: token L1 / copy, episode-bootstrap 95 % interval (`wm_prediction_table`)\n")
        keys = ["robot"] if "robot" in t else []
        rows = []
        for key, g in t.groupby(keys + ["horizon"], sort=True):
            row = dict(zip(keys + ["horizon"], key))
            row["pairs / episodes"] = f"{int(g['pairs'].iloc[0])} / {int(g['episodes'].iloc[0])}"
            for _, r in g.iterrows():
                if r["model"] == "copy":
                    row["copy L1"] = f"{r['token_l1']:.4f}"
                    continue
                row[r["model"]] = ci(r["vs_copy"], r["vs_copy_ci_low"], r["vs_copy_ci_high"],
                                     episodes=r.get("episodes"))
            rows.append(row)
        p(md(pd.DataFrame(rows)) + "\n")
        p("RLA-WM minus each baseline (ratio to copy; < 0: RLA-WM better), 95 % interval:\n")
        rows = []
        for _, r in t[t["model"].isin(["deterministic", "deterministic_residual", "absolute_flow"])].iterrows():
            rows.append({**({"robot": r["robot"]} if keys else {}), "horizon": r["horizon"], "baseline": r["model"],
                         "RLA-WM - baseline": ci(r["ref_minus_vs_copy"], r["ref_minus_ci_low"], r["ref_minus_ci_high"],
                                                 episodes=r.get("episodes"))})
        p(md(pd.DataFrame(rows)) + "\n")

    t = read(rep, "wm_decoded_table")
    if t is not None:
        p("## World models decoded to RGB: SSIM / PSNR against the true frames (`wm_decoded_table`)\n")
        cols = [c for c in ("robot", "name", "horizon", "pairs", "episodes") if c in t]
        out = t[cols].copy()
        out["SSIM"] = [ci(r["ssim"], r["ssim_ci_low"], r["ssim_ci_high"], 3, r.get("episodes"))
                       for _, r in t.iterrows()]
        if "psnr_ci_low" in t:
            out["PSNR dB"] = [ci(r["psnr"], r["psnr_ci_low"], r["psnr_ci_high"], 1, r.get("episodes"))
                              for _, r in t.iterrows()]
        p(md(out) + "\n")

    for name in ("imagined_env_calibration", "speed_table"):
        t = read(rep, name)
        if t is not None:
            p(f"## `{name}`\n")
            p(md(t if len(t.columns) < 12 else t.T.reset_index().rename(columns={"index": "field", 0: "value"})) + "\n")

    for name in ("bc_success_table", "wmrl_success_table"):
        f = rep / f"{name}.md"
        if f.exists():
            p(f.read_text().strip() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
