"""The HTML report: one self-contained file (tables inline, images embedded as base64 PNG, no external assets).

Sections: a provenance header (git commit, DVC data hashes, MLflow run id, encoder and whether its weights are
pretrained or random-init, with a loud banner for random-init), the two success-rate tables (with the paper's
numbers in the columns they carry), future-prediction errors (table, plot, pictures of predicted features; the
rollouts decoded to RGB with SSIM / PSNR and the decoder's own reconstruction quality), the
RLA checks (reconstruction vs copy, held-out-task generalisation, temporal progression) and the tuning result
(best shape + the error-vs-size trade-off, or "not run").

Everything here is plain Python over pandas / matplotlib / bytes: usable from a notebook; the Kedro node
(``pipelines/report``) only passes loaded datasets in.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from rla_pipeline.utils.config import from_dict

RANDOM_INIT_TAG = "random-init"


@dataclass
class ReportConfig:
    """How the report renders (``params:report``)."""

    title: str = "RLA pipeline report"
    max_table_rows: int = 60  # longer tables are cut (with a note saying how many rows were left out)
    float_digits: int = 3  # decimals for floats in tables
    image_max_width_px: int = 900  # display width of embedded images

    @classmethod
    def from_dict(cls, d: dict | None) -> "ReportConfig":
        return from_dict(cls, d, where="report")

    def __post_init__(self) -> None:
        if self.max_table_rows <= 0 or self.float_digits < 0 or self.image_max_width_px <= 0:
            raise ValueError(f"bad report config: {self}")


@dataclass
class Provenance:
    """What produced the report; every field may be unknown (None / empty)."""

    git_commit: str | None = None
    git_dirty: bool | None = None
    dvc_hashes: dict[str, str] | None = None  # path -> md5 from dvc.lock
    mlflow_run_id: str | None = None
    encoder: str | None = None  # timm model name
    weights_tag: str | None = None  # "pretrained" | "file:<sha>" | "random-init"
    kedro_env: str | None = None


def provenance_from(manifest: pd.DataFrame | None, info: dict | None, mlflow_run_id: str | None) -> Provenance:
    """Provenance from the feature manifest (encoder, weights_tag), a git/DVC info dict and the MLflow run id.

    info keys: ``git.commit``, ``git.dirty`` ("true"/"false"), ``dvc.<path>`` -> md5, optional ``kedro.env``
    (as produced by ``rla_pipeline.hooks.git_info`` / ``dvc_data_hashes``).
    """
    info = dict(info or {})
    encoder = weights = None
    if manifest is not None and len(manifest):
        if "encoder" in manifest.columns:
            encoder = ", ".join(sorted(map(str, manifest["encoder"].dropna().unique()))) or None
        if "weights_tag" in manifest.columns:
            tags = sorted(map(str, manifest["weights_tag"].dropna().unique()))
            # any random-init cache entry makes the whole report random-init
            weights = RANDOM_INIT_TAG if RANDOM_INIT_TAG in tags else (", ".join(tags) or None)
    dirty = info.get("git.dirty")
    return Provenance(
        git_commit=info.get("git.commit"),
        git_dirty=None if dirty is None else str(dirty).lower() == "true",
        dvc_hashes={k[4:]: v for k, v in info.items() if k.startswith("dvc.")},
        mlflow_run_id=mlflow_run_id,
        encoder=encoder,
        weights_tag=weights,
        kedro_env=info.get("kedro.env"),
    )


# --------------------------------------------------------------------------------------------------------------
# Rendering pieces
# --------------------------------------------------------------------------------------------------------------
def png_bytes(obj: Any) -> bytes:
    """PNG bytes from a matplotlib Figure, PIL Image, (H,W[,3|4]) uint8/float array, or PNG bytes."""
    if isinstance(obj, (bytes, bytearray)):
        if not bytes(obj[:8]) == b"\x89PNG\r\n\x1a\n":
            raise ValueError("image bytes are not a PNG")
        return bytes(obj)
    if hasattr(obj, "savefig"):  # matplotlib Figure
        buf = io.BytesIO()
        obj.savefig(buf, format="png", dpi=getattr(obj, "dpi", 100), bbox_inches="tight")
        return buf.getvalue()
    if hasattr(obj, "save") and hasattr(obj, "mode"):  # PIL Image
        buf = io.BytesIO()
        obj.save(buf, format="PNG")
        return buf.getvalue()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(obj, np.ndarray):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.image

        arr = obj
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0.0, 1.0)
        buf = io.BytesIO()
        matplotlib.image.imsave(buf, arr, format="png")
        return buf.getvalue()
    raise TypeError(f"cannot turn a {type(obj).__name__} into a PNG")


def _img(obj: Any, cfg: ReportConfig, caption: str = "") -> str:
    b64 = base64.b64encode(png_bytes(obj)).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img alt="{html.escape(caption or "figure")}" style="max-width:{cfg.image_max_width_px}px;'
            f'width:100%" src="data:image/png;base64,{b64}">{cap}</figure>')


def _images(obj: Any, cfg: ReportConfig, caption: str) -> str:
    """One image, or a list/dict of images (dict keys become captions)."""
    if obj is None:
        return _missing(caption)
    if isinstance(obj, dict):
        return "".join(_img(v, cfg, f"{caption}: {k}") for k, v in sorted(obj.items()))
    if isinstance(obj, (list, tuple)):
        return "".join(_img(v, cfg, f"{caption} ({i + 1})") for i, v in enumerate(obj))
    return _img(obj, cfg, caption)


def _fmt(v: Any, digits: int) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def table_html(df: pd.DataFrame | None, cfg: ReportConfig, caption: str = "") -> str:
    """An HTML table of ``df`` (floats rounded, long tables cut with a note)."""
    if df is None:
        return _missing(caption)
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    shown = df.head(cfg.max_table_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = "".join(f"<td>{_fmt(v, cfg.float_digits)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    note = (f'<p class="note">{len(df) - len(shown)} more rows not shown ({len(df)} in all).</p>'
            if len(df) > len(shown) else "")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}'


def _missing(what: str) -> str:
    return f'<p class="missing">{html.escape(what or "this part")}: not available.</p>'


def _section(anchor: str, title: str, body: Iterable[str] | str) -> str:
    inner = body if isinstance(body, str) else "".join(body)
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{inner}</section>'


def _header(prov: Provenance, cfg: ReportConfig, generated: str) -> str:
    rows = [
        ("git commit", (prov.git_commit or "unknown") + (" (uncommitted changes)" if prov.git_dirty else "")),
        ("MLflow run id", prov.mlflow_run_id or "none (no active MLflow run)"),
        ("DINO encoder", prov.encoder or "unknown"),
        ("encoder weights", prov.weights_tag or "unknown"),
        ("Kedro env", prov.kedro_env or "-"),
        ("generated", generated),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows)
    dvc = prov.dvc_hashes or {}
    dvc_html = (
        "<details><summary>DVC data hashes (dvc.lock)</summary><table>"
        + "".join(f"<tr><td><code>{html.escape(p)}</code></td><td><code>{html.escape(h)}</code></td></tr>"
                  for p, h in sorted(dvc.items()))
        + "</table></details>"
        if dvc else '<p class="note">DVC data hashes: no dvc.lock (data not produced by <code>dvc repro</code>).</p>'
    )
    banner = ""
    if prov.weights_tag == RANDOM_INIT_TAG:
        banner = (
            '<div class="banner" id="random-init-banner"><strong>RANDOM-INIT ENCODER.</strong> The DINO features '
            "in this report come from an encoder with RANDOM weights, not pretrained DINO. Every number below "
            "measures the pipeline's mechanics, not the paper's method: do not compare it with the paper.</div>"
        )
    elif prov.weights_tag is None:
        banner = ('<div class="banner warn">Encoder weights unknown (no feature manifest): treat the numbers '
                  "with care.</div>")
    return (f"<header><h1>{html.escape(cfg.title)}</h1>{banner}<table class=\"prov\">{table}</table>"
            f"{dvc_html}</header>")


def _success_section(anchor: str, title: str, table: pd.DataFrame | None, cfg: ReportConfig, note: str) -> str:
    parts = [f'<p class="note">{html.escape(note)}</p>']
    if table is not None and "verdict" in getattr(table, "columns", []) and "task" in table.columns:
        avg = table[table["task"] == "average"]
        if len(avg):
            parts.append(f'<p class="verdict">Average row verdict: <strong>{html.escape(str(avg["verdict"].iloc[0]))}'
                         "</strong></p>")
    parts.append(table_html(table, cfg, title))
    return _section(anchor, title, parts)


def _tuning_section(tuned: dict | None, cfg: ReportConfig) -> str:
    if not tuned:
        return _section("tuning", "RLA latent-shape tuning",
                        '<p class="missing" id="tuning-not-run">Tuning: not run (no Optuna study result; run '
                        "<code>kedro run --pipelines=tune</code>).</p>")
    from rla_pipeline.tuning.results import tradeoff_figure

    best = (f"<p>Best shape: <strong>{tuned['latent_tokens']} x {tuned['latent_dim']}</strong> "
            f"(K x d = {tuned['latent_tokens'] * tuned['latent_dim']}), lr {tuned.get('lr', float('nan')):.2e}, "
            f"{html.escape(str(tuned.get('metric', 'val')))} = {tuned.get('best_value', float('nan')):.4f} "
            f"(trial {tuned.get('best_trial')}; {tuned.get('n_complete', '?')} complete, "
            f"{tuned.get('n_pruned', '?')} pruned; study <code>{html.escape(str(tuned.get('study_name')))}</code>)."
            "</p>")
    trials = tuned.get("trials") or []
    import matplotlib.pyplot as plt

    fig = tradeoff_figure(trials, metric=str(tuned.get("metric", "val_l1")), best_trial=tuned.get("best_trial"))
    img = _img(fig, cfg, "error against latent size K*d (each point one trial)")
    plt.close(fig)
    return _section("tuning", "RLA latent-shape tuning",
                    [best, img, table_html(pd.DataFrame(trials), cfg, "trials")])


def decoded_table_view(df: pd.DataFrame | None, digits: int = 3) -> pd.DataFrame | None:
    """The decoded world-model table (``wm_decoded_table``) compacted for reading: one ``mean [low, high]`` cell
    per metric (episode-bootstrap 95% interval) and RLA-WM minus the row's method, LPIPS only where it was computed."""
    if df is None or not len(df):
        return df

    def cell(row, m: str, prefix: str = "") -> str:
        v, lo, hi = (row[f"{prefix}{m}"], row[f"{prefix}{m}_ci_low"], row[f"{prefix}{m}_ci_high"])
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        d = 1 if m == "psnr" else digits
        return f"{v:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]" if not math.isnan(lo) else f"{v:.{d}f}"

    metrics = ["ssim", "psnr"] + (["lpips"] if "lpips" in df.columns and df["lpips"].notna().any() else [])
    rows = []
    for _, r in df.iterrows():
        out = {"robot": r.get("robot", "all"), "model": r.get("name", r["model"]), "horizon": r["horizon"],
               "pairs": r["pairs"]}
        for m in metrics:
            out[m] = cell(r, m)
        for m in ("ssim", "psnr"):
            out[f"RLA-WM - this ({m})"] = cell(r, m, "ref_minus_")
        rows.append(out)
    view = pd.DataFrame(rows)
    if view["robot"].nunique() == 1:
        view = view.drop(columns="robot")
    return view


def progression_table_view(df: pd.DataFrame | None, digits: int = 3) -> pd.DataFrame | None:
    """The temporal-progression table (``rla_temporal_progression``, one row per h) compacted for reading: true z,
    shuffled z and their difference with its ``[low, high]`` episode-bootstrap interval, for progress at a = 1 and
    for the Spearman of progress against a, beside decoder / copy and the verdict. A table without those columns
    (e.g. from an older run) is shown as it is."""
    need = {"h", "progress_at_1", "progress_at_1_diff", "spearman_diff", "verdict"}
    if df is None or not len(df) or not need <= set(df.columns):
        return df

    def ci(v: float, lo: float, hi: float) -> str:
        if v is None or math.isnan(v):
            return "–"
        return f"{v:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" if not math.isnan(lo) else f"{v:+.{digits}f}"

    rows = []
    for _, r in df.iterrows():
        rows.append({
            "h": r["h"], "pairs / episodes": f"{int(r['pairs'])} / {int(r['episodes'])}", "donors": r["donors"],
            "decoder / copy": r["decoder_over_copy"],
            "progress a=1: true z": ci(r["progress_at_1"], r["progress_at_1_ci_low"], r["progress_at_1_ci_high"]),
            "progress a=1: shuffled z": f"{r['progress_at_1_shuffled_z']:+.{digits}f}",
            "progress a=1: true - shuffled": ci(r["progress_at_1_diff"], r["progress_at_1_diff_ci_low"],
                                                r["progress_at_1_diff_ci_high"]),
            "Spearman: true z": f"{r['spearman']:+.{digits}f}",
            "Spearman: shuffled z": f"{r['spearman_shuffled_z']:+.{digits}f}",
            "Spearman: true - shuffled": ci(r["spearman_diff"], r["spearman_diff_ci_low"], r["spearman_diff_ci_high"]),
            "verdict": r["verdict"],
        })
    return pd.DataFrame(rows)


_CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222;line-height:1.4}
h1{margin:0 0 8px}h2{border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:32px}h3{margin-top:20px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}table.prov td,table.prov th{text-align:left}caption{font-weight:bold;text-align:left;padding:4px 0}
.banner{background:#c62828;color:#fff;font-size:18px;padding:14px 18px;border:4px solid #7f0000;margin:10px 0}
.banner.warn{background:#ef6c00;border-color:#8a3d00}.missing{color:#8a3d00;font-style:italic}
.note{color:#555;font-size:13px}.verdict{font-size:15px}figure{margin:10px 0}figcaption{color:#555;font-size:13px}
nav a{margin-right:12px}
"""


def build_report(
    *,
    provenance: Provenance,
    bc_success_table: pd.DataFrame | None = None,
    wmrl_success_table: pd.DataFrame | None = None,
    wm_prediction_table: pd.DataFrame | None = None,
    wm_prediction_plot: Any = None,
    wm_feature_pictures: Any = None,
    rla_metrics: pd.DataFrame | None = None,
    rla_generalisation: pd.DataFrame | None = None,
    rla_temporal_progression: pd.DataFrame | None = None,
    tuned_shape: dict | None = None,
    ingestion_summary: pd.DataFrame | None = None,
    config: ReportConfig | None = None,
    generated_at: str | None = None,
    wm_decoded_table: pd.DataFrame | None = None,
    wm_decoded_rollouts: Any = None,
    pixel_decoder_metrics: pd.DataFrame | None = None,
    pixel_decoder_grid: Any = None,
) -> str:
    """The whole report as one HTML string (UTF-8, self-contained).

    Tables are DataFrames; images are matplotlib figures, PIL images, arrays or PNG bytes (or a list/dict of them);
    ``tuned_shape`` is the ``rla_tuned_shape`` dict (None: tuning not run). A None section says "not available".
    The decoded predictions (``wm_decoded_*``, ``pixel_decoder_*``: the DINO-to-RGB decoder's outputs) go into the
    future-prediction section, as images and SSIM / PSNR tables.
    """
    cfg = config or ReportConfig()
    generated = generated_at or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [
        ("success-bc", "Actionless BC: BC vs BC+RLA (paper Table 2)"),
        ("success-wmrl", "WMRL: BC vs PPO in the world model (paper Table 3)"),
        ("prediction", "Future prediction in DINO feature space"),
        ("rla-checks", "RLA autoencoder checks"),
        ("tuning", "RLA latent-shape tuning"),
        ("data", "Data"),
    ]
    nav = "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in sections) + "</nav>"
    note = ("Success rates in percent over simulator episodes with 95% Wilson intervals. Both policies ran the same "
            "evaluation seeds: diff is method - baseline (points) with a paired bootstrap 95% interval, and the "
            "verdict is the exact McNemar test at 5%. The paper's columns are references from different robots "
            "and scale.")
    body = [
        _header(provenance, cfg, generated),
        nav,
        _success_section("success-bc", sections[0][1], bc_success_table, cfg, note),
        _success_section("success-wmrl", sections[1][1], wmrl_success_table, cfg, note),
        _section("prediction", sections[2][1], [
            "<h3>Token L1 per horizon (RLA-WM vs baselines)</h3>",
            '<p class="note">vs_copy: ratio to the copy baseline with an episode-level bootstrap 95% interval; '
            "ref_minus_vs_copy: RLA-WM's ratio minus this model's (&lt; 0: RLA-WM better), with its interval. "
            "Every model trained on the same data and the same total budget (world_model.budget).</p>",
            table_html(wm_prediction_table, cfg, "prediction error"),
            _images(wm_prediction_plot, cfg, "prediction error against horizon"),
            "<h3>Pictures of predicted features</h3>",
            _images(wm_feature_pictures, cfg, "predicted vs true features"),
            '<h3 id="decoded-predictions">Imagined rollouts decoded to RGB</h3>',
            '<p class="note">The same rollouts (episodes, starts, seeds) decoded by the DINO-to-RGB decoder and '
            "compared with the true frames: mean [episode-bootstrap 95% interval]; higher SSIM / PSNR is better. "
            "decoded truth decodes the TRUE future tokens: the decoder's ceiling, so the gap between a model and it "
            "is the world model's and the gap from it to a perfect score the decoder's. copy s_t decodes the start "
            "frame (the token table's copy); copy frame t is the true start frame without the decoder. "
            "RLA-WM - this: RLA-WM's mean minus the row's (&gt; 0: RLA-WM better).</p>",
            table_html(decoded_table_view(wm_decoded_table, cfg.float_digits), cfg,
                       "decoded predictions vs true frames"),
            _images(wm_decoded_rollouts, cfg, "imagined rollouts decoded to RGB (held-out episodes)"),
            '<h3 id="pixel-decoder">DINO-to-RGB decoder: reconstruction quality</h3>',
            '<p class="note">The decoder on episodes it never trained on, against the training set\'s mean frame. '
            "LPIPS is reported only with local weights (nothing is downloaded).</p>",
            table_html(pixel_decoder_metrics, cfg, "decoder reconstruction (held-out episodes)"),
            _images(pixel_decoder_grid, cfg, "true (top) vs decoded (bottom) frames"),
        ]),
        _section("rla-checks", sections[3][1], [
            "<h3>Reconstruction vs copying s_t</h3>", table_html(rla_metrics, cfg, "reconstruction"),
            "<h3>Generalisation to the held-out task</h3>", table_html(rla_generalisation, cfg, "generalisation"),
            "<h3>Temporal progression</h3>",
            '<p class="note">Claim 1.3: decoding from a z + (1 - a) noise for a from 0 to 1, the decode\'s progress '
            "is its projection on s_{t+h} - s_t (0 = s_t, 1 = s_{t+h}; over the flattened tokens, pairs weighted by "
            "their motion). The control is the same walk, with the same noise, to the z of other pairs (other "
            "episodes; mean over the donors). Shown: true z minus shuffled z with an episode-bootstrap 95% interval, "
            "for progress at a = 1 and for the Spearman of progress against a; the verdict says only what the two "
            "intervals support. decoder / copy: the decoder's token L1 over copy's at this h, the check's power "
            "(near 1: the decode of the true z is itself barely closer to s_{t+h}).</p>",
            table_html(progression_table_view(rla_temporal_progression, cfg.float_digits), cfg,
                       "temporal progression"),
        ]),
        _tuning_section(tuned_shape, cfg),
        _section("data", sections[5][1], table_html(ingestion_summary, cfg, "ingestion summary")),
    ]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(cfg.title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>")
