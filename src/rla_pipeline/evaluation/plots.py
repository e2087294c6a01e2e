"""Figures: world-model error against horizon, and DINO tokens shown as images (PCA of tokens to RGB).

Every function returns a matplotlib Figure (saved by kedro-datasets ``matplotlib.MatplotlibDataset``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def error_vs_horizon(table: pd.DataFrame, title: str = "Future prediction: token L1 vs horizon"):
    """Line plot of ``token_l1`` against ``horizon``, one line per ``model`` (the wm_prediction_table)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, g in table.groupby("model", sort=False):
        g = g.sort_values("horizon")
        ax.plot(g["horizon"], g["token_l1"], marker="o", label=name, linestyle="--" if name == "copy" else "-")
    ax.set_xlabel("horizon (frames)")
    ax.set_ylabel("token L1 (raw DINO tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


class TokenPCA:
    """PCA of tokens (D dims) to 3 components mapped to RGB, fitted on training tokens.

    Colours are scaled with the 1st/99th percentiles of the training projections so all pictures share one scale.
    """

    def __init__(self, tokens: np.ndarray, max_rows: int = 20000, seed: int = 0):
        flat = np.asarray(tokens, dtype=np.float64).reshape(-1, np.asarray(tokens).shape[-1])
        if len(flat) > max_rows:
            flat = flat[np.random.default_rng(seed).choice(len(flat), max_rows, replace=False)]
        self.mean = flat.mean(0)
        _, _, vt = np.linalg.svd(flat - self.mean, full_matrices=False)
        self.components = vt[:3]  # (3, D)
        proj = (flat - self.mean) @ self.components.T
        self.lo, self.hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)

    def to_rgb(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens (N, D) with N a square -> image float (sqrt N, sqrt N, 3) in [0, 1]."""
        tokens = np.asarray(tokens, dtype=np.float64)
        proj = (tokens - self.mean) @ self.components.T
        rgb = np.clip((proj - self.lo) / np.maximum(self.hi - self.lo, 1e-12), 0, 1)
        side = int(round(math.sqrt(len(tokens))))
        if side * side != len(tokens):  # not a square grid: show one row of patches
            return rgb[None]
        return rgb.reshape(side, side, 3)


def feature_pictures(pca: TokenPCA, start: np.ndarray, truth: dict[int, np.ndarray],
                     predictions: dict[str, dict[int, np.ndarray]], title: str = ""):
    """Predicted vs true tokens as PCA images for one or more episodes.

    start: (E, N, D) tokens at the start frame of E episodes; truth: {horizon: (E, N, D)};
    predictions: {model: {horizon: (E, N, D)}}. Layout: for each episode a block of rows (truth, then each model),
    columns = start frame then each horizon.
    """
    plt = _plt()
    horizons = sorted(truth)
    rows = ["truth", *predictions]
    E = start.shape[0]
    ncol, nrow = 1 + len(horizons), E * len(rows)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.6 * ncol + 1, 1.6 * nrow), squeeze=False)
    for e in range(E):
        for r, name in enumerate(rows):
            ax_row = axes[e * len(rows) + r]
            if r == 0:
                ax_row[0].imshow(pca.to_rgb(start[e]))
                ax_row[0].set_title(f"ep {e}: s_0" if e == 0 else f"ep {e}", fontsize=8)
            for c, h in enumerate(horizons, start=1):
                src = truth if name == "truth" else predictions[name]
                ax_row[c].imshow(pca.to_rgb(src[h][e]))
                if e == 0 and r == 0:
                    ax_row[c].set_title(f"+{h} frames", fontsize=8)
            ax_row[0].set_ylabel(name, fontsize=8)
            for ax in ax_row:
                ax.set_xticks([])
                ax.set_yticks([])
                for sp in ax.spines.values():
                    sp.set_visible(ax is not ax_row[0] or r == 0)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
