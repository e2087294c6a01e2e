"""Future-prediction metrics on DINO tokens: RLA reconstruction vs copy, temporal progression, world-model horizons.

Inputs are read from a feature cache (duck-typed: ``cache.tokens(eid) -> (T, N, D)``, ``cache.steps(eid) ->
{"action": (T, A)}``). Evaluation pairs are fixed (every ``stride`` frames, per horizon), so numbers are comparable
between runs. Token L1 is the mean absolute difference over tokens and dims, on raw (unnormalised) tokens.
Action convention: the chunk from frame t to t+h is ``action[t : t+h]`` (the action at frame t leads to frame t+1).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from rla_pipeline.evaluation.intervals import MIN_BOOTSTRAP_UNITS


# ---------------------------------------------------------------- elementary metrics
def token_l1(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-sample mean |pred - true| over tokens and dims: (B, N, D) x2 -> (B,)."""
    return (pred.float() - true.float()).abs().flatten(1).mean(1)


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks (0-based, ties get their average rank)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):
        same = x == v
        if same.sum() > 1:
            ranks[same] = ranks[same].mean()
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation; 0.0 when either side is constant (no ordering information)."""
    rx, ry = rank(x), rank(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


# ---------------------------------------------------------------- pair selection
def eval_pairs(frames: dict[str, int], horizons: list[int], stride: int, max_per_episode: int | None = None
               ) -> pd.DataFrame:
    """Fixed evaluation pairs: columns episode_id, t, h (t = 0, stride, ... while t + h < T)."""
    rows = []
    for eid in sorted(frames):
        T = int(frames[eid])
        for h in horizons:
            ts = list(range(0, T - h, stride))
            if max_per_episode:
                ts = ts[:max_per_episode]
            rows += [(eid, t, int(h)) for t in ts]
    return pd.DataFrame(rows, columns=["episode_id", "t", "h"])


def _frames(cache, episode_ids) -> dict[str, int]:
    return {eid: int(cache.tokens(eid).shape[0]) for eid in episode_ids}


def _stack(cache, pairs: pd.DataFrame, offset: int = 0) -> torch.Tensor:
    """Tokens at frame t + offset (or t + h when offset == -1) for every pair -> (B, N, D) float32."""
    out = []
    for eid, t, h in pairs[["episode_id", "t", "h"]].itertuples(index=False):
        idx = t + (h if offset == -1 else offset)
        out.append(np.asarray(cache.tokens(eid)[idx], dtype=np.float32))
    return torch.from_numpy(np.stack(out))


# ---------------------------------------------------------------- RLA
@torch.no_grad()
def rla_reconstruction(model, cache, episode_ids: list[str], horizons: list[int], stride: int = 4,
                       batch_size: int = 64, split: str = "val") -> pd.DataFrame:
    """Token L1 of RLA reconstructions vs the copy baseline (s_{t+h} = s_t), one row per h and an ``all`` row.

    Columns: split, h, pairs, rla_l1, copy_l1, ratio (rla / copy; < 1 means RLA beats copying).
    """
    model.eval()
    pairs = eval_pairs(_frames(cache, episode_ids), horizons, stride)
    cols = ["split", "h", "pairs", "rla_l1", "copy_l1", "ratio"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    rla_err, copy_err = [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs.iloc[i : i + batch_size]
        s_t, s_th = _stack(cache, chunk), _stack(cache, chunk, -1)
        pred, _ = model(s_t, s_th)
        rla_err.append(token_l1(pred, s_th))
        copy_err.append(token_l1(s_t, s_th))
    pairs = pairs.assign(rla_l1=torch.cat(rla_err).numpy(), copy_l1=torch.cat(copy_err).numpy())
    rows = []
    for h, g in list(pairs.groupby("h")) + [("all", pairs)]:
        rows.append({"split": split, "h": str(h), "pairs": len(g), "rla_l1": float(g.rla_l1.mean()),
                     "copy_l1": float(g.copy_l1.mean())})
    out = pd.DataFrame(rows)
    out["ratio"] = out.rla_l1 / out.copy_l1.clip(lower=1e-12)
    return out[cols]


# ---------------------------------------------------------------- temporal progression (claim 1.3)
PROGRESSION_PAIR_COLUMNS = ["episode_id", "t", "h", "motion_sq", "decoder_l1", "copy_l1", "donors", "progress",
                            "progress_shuffled_z", "progress_at_1", "progress_at_1_shuffled_z", "spearman",
                            "spearman_shuffled_z"]
PROGRESSION_COLUMNS = ["h", "pairs", "episodes", "donors", "decoder_l1", "copy_l1", "decoder_over_copy",
                       "progress_at_0", "progress_at_1", "progress_at_1_ci_low", "progress_at_1_ci_high",
                       "progress_at_1_shuffled_z", "progress_at_1_diff", "progress_at_1_diff_ci_low",
                       "progress_at_1_diff_ci_high", "spearman", "spearman_shuffled_z", "spearman_diff",
                       "spearman_diff_ci_low", "spearman_diff_ci_high", "alphas", "progress_curve",
                       "progress_curve_shuffled_z", "verdict", "shown"]


# progress values are ranked (Spearman) after rounding to this many decimals: decodes that differ only by float32
# rounding (a decoder that ignores z, batched differently) must tie, not give a random order
PROGRESS_TIE_DECIMALS = 6


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _donor_pairs(eids: list[str], donors: int, rng: np.random.Generator) -> list[list[int]]:
    """Per pair, up to ``donors`` other pairs (without replacement, in index order) whose z is the control: pairs
    of OTHER episodes; only when there is no other episode, other pairs of the same one."""
    out = []
    for i, e in enumerate(eids):
        pool = [j for j, f in enumerate(eids) if f != e] or [j for j in range(len(eids)) if j != i]
        k = min(donors, len(pool))
        out.append(sorted(rng.choice(pool, size=k, replace=False).tolist()) if k else [])
    return out


@torch.no_grad()
def progression_pairs(model, cache, episode_ids: list[str], h: int, alphas: list[float], stride: int = 4,
                      max_pairs: int | None = 64, donors: int = 8, seed: int = 0, batch_size: int = 64
                      ) -> pd.DataFrame:
    """Per pair (s_t, s_{t+h}): the progress of decodes along the paper's walk from a noise vector to z.

    The walk (claim 1.3, the paper's interpolation between a Gaussian noise vector and the RLA): for each a in
    ``alphas``, z_a = a z + (1 - a) sigma eps, decoded with s_t. eps ~ N(0, I) is drawn ONCE per pair (from a
    generator seeded with ``seed``, in pair order) and sigma is the std of all the evaluated pairs' true z (one
    scalar), so the true z and every control z share the very same noise vector: at a = 0 they decode the same
    latent. The RLA decoder itself is deterministic in eval mode (no dropout, no sampling of its own), so the
    true-z and control decodes differ only in the z that is mixed in.

    Progress coordinate of a decode d: proj(d) = <d - s_t, s_{t+h} - s_t> / |s_{t+h} - s_t|^2 on the FLATTENED
    (N x D) raw token tensor (one projection per pair, not a mean of per-token projections: tokens that do not
    move would divide by ~0). 0 = at s_t, 1 = as far along the motion as s_{t+h}; continuous, so there are no ties
    between adjacent frames and the decoder's error off the motion direction does not enter.

    Control: the same walk, same s_t, same eps, with the z of ``donors`` other pairs (from other episodes, chosen by
    a generator seeded with ``seed``); the control's numbers are the means over the donors of the per-donor numbers.

    Columns: episode_id, t, h; motion_sq (|s_{t+h} - s_t|^2, the weight of the pair in the summary); decoder_l1 /
    copy_l1 (token L1 of decode(s_t, z) and of s_t against s_{t+h}); donors (how many); progress /
    progress_shuffled_z (lists, one value per alpha); progress_at_1 / progress_at_1_shuffled_z (at a = 1);
    spearman / spearman_shuffled_z (Spearman of the progress, rounded to ``PROGRESS_TIE_DECIMALS``, against a:
    1 = the walk moves monotonically towards s_{t+h}). Pairs whose two frames are identical (motion_sq == 0: no direction to progress along) are left out.
    """
    alphas = [float(a) for a in alphas]
    if len(alphas) < 2 or 1.0 not in alphas:
        raise ValueError(f"the progression grid needs >= 2 alphas including 1.0, got {alphas}")
    model.eval()
    pairs = spread_pairs(eval_pairs(_frames(cache, episode_ids), [h], stride), sorted(episode_ids), max_pairs)
    if pairs.empty:
        return pd.DataFrame(columns=PROGRESSION_PAIR_COLUMNS)
    s_t, s_th = _stack(cache, pairs), _stack(cache, pairs, -1)
    delta = (s_th - s_t).flatten(1).double()  # (P, N*D)
    motion_sq = (delta ** 2).sum(1)
    keep = (motion_sq > 0).numpy()
    pairs, s_t, s_th, delta, motion_sq = (pairs[keep].reset_index(drop=True), s_t[keep], s_th[keep], delta[keep],
                                          motion_sq[keep])
    if pairs.empty:
        return pd.DataFrame(columns=PROGRESSION_PAIR_COLUMNS)
    dev = _model_device(model)
    z = torch.cat([model.encode(s_t[i : i + batch_size].to(dev), s_th[i : i + batch_size].to(dev)).float().cpu()
                   for i in range(0, len(pairs), batch_size)])  # (P, K, d)
    sigma = float(z.std()) if z.numel() > 1 else 0.0
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))  # one noise vector per pair
    eids = pairs["episode_id"].tolist()
    donor_idx = _donor_pairs(eids, donors, np.random.default_rng(seed))
    a = torch.tensor(alphas)[:, None, None]  # (A, 1, 1)
    i1 = alphas.index(1.0)
    rows = []
    for i, (eid, t, hh) in enumerate(pairs.itertuples(index=False)):
        lat = z[[i] + donor_idx[i]]  # (1 + k, K, d): the true z first
        z_a = (a[None] * lat[:, None] + (1 - a[None]) * sigma * eps[i][None, None]).flatten(0, 1)  # ((1+k)*A, K, d)
        dec = torch.cat([model.decode(s_t[i : i + 1].expand(len(c), -1, -1).to(dev), c.to(dev)).float().cpu()
                         for c in z_a.split(batch_size)])  # ((1+k)*A, N, D)
        prog = ((dec - s_t[i]).flatten(1).double() @ delta[i]) / motion_sq[i]
        prog = prog.view(1 + len(donor_idx[i]), len(alphas)).numpy()  # (1 + k, A)
        true, ctrl = prog[0], prog[1:]
        ranked = np.round(prog, PROGRESS_TIE_DECIMALS)  # float rounding of a decoder that ignores z is no order
        has_ctrl = len(ctrl) > 0
        rows.append({
            "episode_id": eid, "t": int(t), "h": int(hh), "motion_sq": float(motion_sq[i]),
            "decoder_l1": float(token_l1(dec[i1 : i1 + 1], s_th[i : i + 1])[0]),
            "copy_l1": float(token_l1(s_t[i : i + 1], s_th[i : i + 1])[0]), "donors": len(ctrl),
            "progress": true.tolist(),
            "progress_shuffled_z": ctrl.mean(0).tolist() if has_ctrl else [math.nan] * len(alphas),
            "progress_at_1": float(true[i1]),
            "progress_at_1_shuffled_z": float(ctrl[:, i1].mean()) if has_ctrl else math.nan,
            "spearman": spearman(alphas, ranked[0]),
            "spearman_shuffled_z": float(np.mean([spearman(alphas, c) for c in ranked[1:]])) if has_ctrl else math.nan,
        })
    return pd.DataFrame(rows, columns=PROGRESSION_PAIR_COLUMNS)


# an interval bound within this of 0 counts as 0: a model that ignores z gives true minus shuffled differences of
# rounding size (the control is a mean over donors), which must not read as "above 0"
VERDICT_ZERO_TOL = 1e-9


def _interval_words(name: str, lo: float, hi: float) -> str:
    span = f"[{lo:+.3f}, {hi:+.3f}]"
    if lo > VERDICT_ZERO_TOL:
        return f"{name} interval {span} above 0"
    if hi < -VERDICT_ZERO_TOL:
        return f"{name} interval {span} below 0 (the shuffled z scores higher)"
    return f"{name} interval {span} includes 0"


def progression_verdict(diff_lo: float, diff_hi: float, rho_lo: float, rho_hi: float, episodes: int) -> str:
    """The verdict in words, from the two episode-bootstrap intervals of true z minus shuffled z only (progress at
    a = 1 and Spearman): ``shown: ...`` when both lie above 0, ``not shown: ...`` naming where each interval lies
    otherwise, ``not tested: ...`` when there is no interval (fewer than 2 episodes)."""
    if episodes < 2 or not all(np.isfinite([diff_lo, diff_hi, rho_lo, rho_hi])):
        return f"not tested: {episodes} episode(s) with a control; the episode bootstrap needs >= 2"
    parts = [_interval_words("progress at a=1", diff_lo, diff_hi), _interval_words("Spearman", rho_lo, rho_hi)]
    if diff_lo > VERDICT_ZERO_TOL and rho_lo > VERDICT_ZERO_TOL:
        return "shown: " + "; ".join(parts)
    return "not shown: " + "; ".join(parts)


def progression_summary(per_pair: pd.DataFrame, alphas: list[float], n_boot: int = 1000, seed: int = 0
                        ) -> pd.DataFrame:
    """One row per h from :func:`progression_pairs`: the headline numbers, true z minus shuffled z with episode-
    bootstrap 95% intervals, and a verdict.

    Progress at a = 1 (and the curves) are means over pairs WEIGHTED by motion_sq, i.e. sum of projections over
    sum of |s_{t+h} - s_t|^2: a pair where almost nothing moves would otherwise put a projection of pure decoder
    error on a tiny vector into the mean with a huge value. The Spearman numbers are plain means over pairs (each
    is in [-1, 1]). The intervals resample EPISODES with replacement (:func:`episode_draws`; pairs of one episode
    share their motion and so are not independent) and recompute the weighted / plain means over the drawn
    episodes' pairs; fewer than 2 episodes give no interval. Pairs without a control (no donor) are left out.

    Columns: h, pairs, episodes, donors (min per pair), decoder_l1, copy_l1, decoder_over_copy (the power of the
    check: the decoder must be clearly below copy at this h), progress_at_0 (at a = 0, where true and shuffled z
    decode the same latent, the shared noise; NaN when 0 is not in the grid), progress_at_1 with _ci_low/_ci_high,
    progress_at_1_shuffled_z, progress_at_1_diff (true minus shuffled) with _ci_low/_ci_high, spearman,
    spearman_shuffled_z, spearman_diff (true minus shuffled) with _ci_low/_ci_high, alphas, progress_curve /
    progress_curve_shuffled_z (weighted mean progress per alpha, lists), verdict (:func:`progression_verdict`)
    and shown (1 shown, 0 not shown, NaN not tested: averaged over seeds, the share of seeds where it is shown).
    """
    alphas = [float(a) for a in alphas]
    i0 = alphas.index(0.0) if 0.0 in alphas else None
    rows = []
    df = per_pair[per_pair["donors"] > 0] if len(per_pair) else per_pair
    for h, g in df.groupby("h", sort=True):
        eps = list(dict.fromkeys(g["episode_id"]))
        w = g["motion_sq"].to_numpy(np.float64)
        p1, p1s = g["progress_at_1"].to_numpy(np.float64), g["progress_at_1_shuffled_z"].to_numpy(np.float64)
        rho, rhos = g["spearman"].to_numpy(np.float64), g["spearman_shuffled_z"].to_numpy(np.float64)
        curve = np.stack(g["progress"].map(np.asarray).to_list())  # (P, A)
        curve_s = np.stack(g["progress_shuffled_z"].map(np.asarray).to_list())
        # per-episode sums: weight, weighted progress (true, shuffled), pair count, Spearman (true, shuffled)
        cols = np.stack([w, w * p1, w * p1s, np.ones_like(w), rho, rhos], 1)
        sums = pd.DataFrame(cols).groupby(g["episode_id"].to_numpy(), sort=False).sum().loc[eps].to_numpy()
        point = sums.sum(0)
        ci = {k: (math.nan, math.nan) for k in ("p1", "diff", "rho")}
        if len(eps) >= MIN_BOOTSTRAP_UNITS:
            tot = episode_draws(len(eps), n_boot, seed) @ sums  # (n_boot, 6)
            boot = {"p1": tot[:, 1] / tot[:, 0], "diff": (tot[:, 1] - tot[:, 2]) / tot[:, 0],
                    "rho": (tot[:, 4] - tot[:, 5]) / tot[:, 3]}
            ci = {k: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) for k, v in boot.items()}
        dec, cp = float(g["decoder_l1"].mean()), float(g["copy_l1"].mean())
        wn = w / w.sum()
        rows.append({
            "h": int(h), "pairs": len(g), "episodes": len(eps), "donors": int(g["donors"].min()),
            "decoder_l1": dec, "copy_l1": cp, "decoder_over_copy": dec / max(cp, 1e-12),
            "progress_at_0": float(wn @ curve[:, i0]) if i0 is not None else math.nan,
            "progress_at_1": point[1] / point[0], "progress_at_1_ci_low": ci["p1"][0],
            "progress_at_1_ci_high": ci["p1"][1], "progress_at_1_shuffled_z": point[2] / point[0],
            "progress_at_1_diff": (point[1] - point[2]) / point[0], "progress_at_1_diff_ci_low": ci["diff"][0],
            "progress_at_1_diff_ci_high": ci["diff"][1],
            "spearman": point[4] / point[3], "spearman_shuffled_z": point[5] / point[3],
            "spearman_diff": (point[4] - point[5]) / point[3], "spearman_diff_ci_low": ci["rho"][0],
            "spearman_diff_ci_high": ci["rho"][1],
            "alphas": alphas, "progress_curve": (wn @ curve).tolist(),
            "progress_curve_shuffled_z": (wn @ curve_s).tolist(),
            "verdict": (verdict := progression_verdict(*ci["diff"], *ci["rho"], len(eps))),
            "shown": 1.0 if verdict.startswith("shown") else 0.0 if verdict.startswith("not shown") else math.nan,
        })
    return pd.DataFrame(rows, columns=PROGRESSION_COLUMNS)


def temporal_progression(model, cache, episode_ids: list[str], h: int, alphas: list[float], stride: int = 4,
                         max_pairs: int | None = 64, seed: int = 0, donors: int = 8, n_boot: int = 1000,
                         batch_size: int = 64) -> pd.DataFrame:
    """Claim 1.3 with power: does walking from a noise vector to the TRUE z move the decoded state from s_t towards
    s_{t+h}, further and more monotonically than walking to other pairs' z with the same noise?

    :func:`progression_pairs` (the walk, the continuous progress coordinate, the many-donor control with shared
    noise) then :func:`progression_summary` (motion-weighted means, episode bootstrap of true minus shuffled,
    verdict) -> one row per h (columns: see :func:`progression_summary`).

    Choosing h: the check has power only where the decoder is clearly below copy (``decoder_over_copy`` well under
    1, printed beside the result). Where it is near copy, the decode of the true z is itself little closer to
    s_{t+h} than s_t is, and the walk's progress is mostly decoder error. The reconstruction ratio falls with h
    over the trained range (``rla_metrics``), so the default ``rla.eval.progression_h`` is the largest horizon the
    small RLA trains on (``rla.samples.h_max``); larger h also makes |s_{t+h} - s_t| large against that error.
    """
    per_pair = progression_pairs(model, cache, episode_ids, h, alphas, stride, max_pairs, donors, seed, batch_size)
    return progression_summary(per_pair, alphas, n_boot, seed)


# ---------------------------------------------------------------- world models
def split_horizon(h: int, chunk: int) -> list[int]:
    """Chunk lengths of an autoregressive rollout over h frames: 30, 10 -> [10, 10, 10]; 15, 10 -> [10, 5]."""
    if h <= 0 or chunk <= 0:
        raise ValueError(f"horizon and chunk must be > 0, got {h}, {chunk}")
    return [chunk] * (h // chunk) + ([h % chunk] if h % chunk else [])


def rollout_action_chunks(actions: np.ndarray, t: int, lengths: list[int], max_actions: int
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Zero-padded chunks (max_actions, A) and masks for actions[t:t+sum(lengths)] split by ``lengths``."""
    chunks, masks, start = [], [], t
    for n in lengths:
        a = np.zeros((max_actions, actions.shape[1]), dtype=np.float32)
        a[:n] = actions[start : start + n]
        m = np.zeros(max_actions, dtype=bool)
        m[:n] = True
        chunks.append(torch.from_numpy(a))
        masks.append(torch.from_numpy(m))
        start += n
    return chunks, masks


def spread_pairs(pairs: pd.DataFrame, episode_order: list[str], max_pairs: int | None) -> pd.DataFrame:
    """Up to ``max_pairs`` pairs taken round-robin over episodes in ``episode_order`` (k-th start of every episode
    before any (k+1)-th); returned in (episode order, t) order."""
    if pairs.empty:
        return pairs
    pos = {e: i for i, e in enumerate(episode_order)}
    p = pairs.assign(_e=pairs["episode_id"].map(pos), _r=pairs.groupby("episode_id").cumcount())
    if max_pairs:
        p = p.sort_values(["_r", "_e"], kind="mergesort").head(max_pairs)
    return p.sort_values(["_e", "t"], kind="mergesort").drop(columns=["_e", "_r"]).reset_index(drop=True)


def episode_draws(n_episodes: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_episodes) counts: how often each episode is drawn in each with-replacement resample. One function
    for every episode bootstrap here, so tables bootstrapped with the same seed over the same episodes (in the same
    order) use the very same resamples."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_episodes, size=(n_boot, n_episodes))
    counts = np.zeros((n_boot, n_episodes))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def episode_bootstrap_means(values: pd.DataFrame, columns: list[str], reference: str | None = None,
                            n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Episode-level bootstrap 95% intervals of each column's mean over pairs, and of ``reference`` minus each column.

    values: one row per pair with ``episode_id`` and one column per method (a per-pair score, e.g. SSIM or PSNR of
    decoded frames). A resample draws episodes with replacement (the resamples of :func:`episode_bootstrap` for the
    same seed and episode order) and takes the mean over the drawn episodes' pairs. NaN values (e.g. LPIPS that
    was not computed) give NaN intervals, and so do fewer than two episodes (every resample would redraw the one
    episode: a zero-width interval that is not evidence of anything). Returns per column: ``mean``, ``ci_low``,
    ``ci_high`` and, when ``reference`` is another column, ``ref_minus`` (reference mean minus this column's) with
    ``ref_minus_ci_low`` / ``ref_minus_ci_high``."""
    eps = list(dict.fromkeys(values["episode_id"]))
    grouped = values.groupby("episode_id", sort=False)
    sums = grouped[columns].sum().loc[eps].to_numpy(np.float64, copy=True)  # (E, M), writable (copy-on-write)
    sums[:, values[columns].isna().any().to_numpy()] = math.nan  # a column with a missing value has no mean
    n_pairs = grouped.size().loc[eps].to_numpy(np.float64)  # (E,)
    counts = episode_draws(len(eps), n_boot, seed)
    means = (counts @ sums) / np.clip(counts @ n_pairs, 1e-12, None)[:, None]  # (n_boot, M)
    point = sums.sum(0) / max(n_pairs.sum(), 1e-12)

    resampled = len(eps) >= MIN_BOOTSTRAP_UNITS

    def q(x: np.ndarray, p: float) -> float:
        return float(np.quantile(x, p)) if resampled and np.isfinite(x).all() else math.nan

    out: dict[str, dict[str, float]] = {}
    for j, c in enumerate(columns):
        r = {"mean": float(point[j]), "ci_low": q(means[:, j], 0.025), "ci_high": q(means[:, j], 0.975)}
        if reference is not None and reference in columns and c != reference:
            k = columns.index(reference)
            d = means[:, k] - means[:, j]
            r.update({"ref_minus": float(point[k] - point[j]), "ref_minus_ci_low": q(d, 0.025),
                      "ref_minus_ci_high": q(d, 0.975)})
        out[c] = r
    return out


def episode_bootstrap(errors: pd.DataFrame, models: list[str], reference: str | None, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, dict[str, float]]:
    """Episode-level bootstrap 95% intervals of each model's ratio to copy, and of ``reference`` minus each model.

    errors: one row per pair with ``episode_id``, ``copy`` and one column per model (per-pair token L1). A resample
    draws episodes with replacement (pairs of one episode are correlated, so the episode is the unit) and the ratio
    is sum(model L1) / sum(copy L1) over the drawn episodes' pairs. Returns per model: vs_copy_ci_low/high and (when
    ``reference`` is given and is another model) ref_minus_vs_copy, ref_minus_ci_low/high (in ratio-to-copy units;
    < 0 means the reference is better). Fewer than two episodes give NaN bounds (the point difference stays): a
    resample of one episode is that episode again, and its zero-width interval would read as certainty."""
    eps = list(dict.fromkeys(errors["episode_id"]))
    per_ep = errors.groupby("episode_id", sort=False)[["copy", *models]].sum().loc[eps]
    sums = per_ep.to_numpy(np.float64)  # (E, 1 + M)
    counts = episode_draws(len(eps), n_boot, seed)
    tot = counts @ sums  # (n_boot, 1 + M)
    ratios = tot[:, 1:] / np.clip(tot[:, :1], 1e-12, None)
    out: dict[str, dict[str, float]] = {}
    point = sums[:, 1:].sum(0) / max(sums[:, 0].sum(), 1e-12)

    def q(x: np.ndarray, p: float) -> float:
        return float(np.quantile(x, p)) if len(eps) >= MIN_BOOTSTRAP_UNITS else math.nan

    for j, m in enumerate(models):
        r = {"vs_copy_ci_low": q(ratios[:, j], 0.025), "vs_copy_ci_high": q(ratios[:, j], 0.975)}
        if reference is not None and reference in models and m != reference:
            k = models.index(reference)
            d = ratios[:, k] - ratios[:, j]
            r.update({"ref_minus_vs_copy": float(point[k] - point[j]), "ref_minus_ci_low": q(d, 0.025),
                      "ref_minus_ci_high": q(d, 0.975)})
        out[m] = r
    return out


@dataclass
class RolloutBatch:
    """Stacked evaluation data for one horizon: s_0 (B,N,D), targets (B,N,D), chunks [(B,H,A)], masks [(B,H)]."""

    pairs: pd.DataFrame
    s_0: torch.Tensor
    target: torch.Tensor
    chunks: list[torch.Tensor] = field(default_factory=list)
    masks: list[torch.Tensor] = field(default_factory=list)


def rollout_batch(cache, episode_ids: list[str], h: int, chunk: int, max_actions: int, stride: int,
                  max_pairs: int | None = None) -> RolloutBatch | None:
    """All evaluation starts for horizon h (None when no episode is long enough or has actions).

    With ``max_pairs``, the pairs kept are spread over the episodes: round-robin in the order of ``episode_ids``
    (pass them interleaved by task), the first start of every episode before any second one, so no single task or
    episode fills the budget."""
    with_actions = [e for e in episode_ids if "action" in cache.steps(e)]
    pairs = spread_pairs(eval_pairs(_frames(cache, with_actions), [h], stride), with_actions, max_pairs)
    if pairs.empty:
        return None
    lengths = split_horizon(h, min(chunk, max_actions))
    per = [rollout_action_chunks(cache.steps(e)["action"], t, lengths, max_actions) for e, t, _ in pairs.itertuples(index=False)]
    chunks = [torch.stack([p[0][i] for p in per]) for i in range(len(lengths))]
    masks = [torch.stack([p[1][i] for p in per]) for i in range(len(lengths))]
    return RolloutBatch(pairs, _stack(cache, pairs), _stack(cache, pairs, -1), chunks, masks)


@torch.no_grad()
def rollout_l1(model, batch: RolloutBatch, batch_size: int = 64, seed: int = 0) -> tuple[float, torch.Tensor]:
    """Mean token L1 of the final rollout prediction vs the truth -> (mean, last predictions (B,N,D))."""
    g = torch.Generator().manual_seed(seed)
    preds = []
    for i in range(0, batch.s_0.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        outs = model.rollout(batch.s_0[sl], [c[sl] for c in batch.chunks], [m[sl] for m in batch.masks], generator=g)
        preds.append(outs[-1])
    pred = torch.cat(preds)
    return float(token_l1(pred, batch.target).mean()), pred


@torch.no_grad()
def step_cost(model, s_t: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, repeats: int = 3
              ) -> dict[str, float]:
    """Cost of one predict_next call per sample: wall seconds (median of ``repeats``) and FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        model.predict_next(s_t, actions, mask, generator=g)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_next(s_t, actions, mask, generator=g)
        times.append(time.perf_counter() - t0)
    B = s_t.shape[0]
    return {"seconds_per_step": float(np.median(times)) / B, "gflops_per_step": counter.get_total_flops() / B / 1e9}


def copy_model_l1(batch: RolloutBatch) -> float:
    return float(token_l1(batch.s_0, batch.target).mean())


@torch.no_grad()
def world_model_table(models: dict, cache, episode_ids: list[str], horizons: list[int], chunk: int,
                      max_actions: int, stride: int = 4, max_pairs: int | None = 128, seed: int = 0,
                      fps: float | None = None, n_boot: int = 1000, reference: str | None = None) -> pd.DataFrame:
    """Token L1 per model and horizon, with the copy baseline, episode-level bootstrap intervals and the cost per
    predicted step. Pairs are spread over ``episode_ids`` in their order (see :func:`rollout_batch`).

    Columns: model, horizon, chunks, pairs, episodes, token_l1, vs_copy (l1 / copy l1), vs_copy_ci_low/high
    (episode bootstrap 95%), ref_minus_vs_copy and ref_minus_ci_low/high (``reference``'s vs_copy minus this
    model's, < 0: the reference predicts better; NaN on the reference's own row and on copy), seconds_per_step,
    gflops_per_step, horizon_seconds (horizon / fps when fps is given).
    """
    rows = []
    nan_ci = {"vs_copy_ci_low": math.nan, "vs_copy_ci_high": math.nan, "ref_minus_vs_copy": math.nan,
              "ref_minus_ci_low": math.nan, "ref_minus_ci_high": math.nan}
    # cost per predicted step, measured once per model (on the first horizon's first pairs): one predict_next call
    # does the same work at every horizon (chunks are padded to max_actions), and measuring it is a flow model's
    # 4 x sample_steps network passes, a third of its share of this table when repeated per horizon
    costs: dict[str, dict[str, float]] = {}
    for h in horizons:
        batch = rollout_batch(cache, episode_ids, h, chunk, max_actions, stride, max_pairs)
        if batch is None:
            continue
        copy = copy_model_l1(batch)
        n_chunks = len(batch.chunks)
        base = {"horizon": int(h), "chunks": n_chunks, "pairs": len(batch.pairs),
                "episodes": int(batch.pairs["episode_id"].nunique()), "horizon_seconds": (h / fps) if fps else math.nan}
        rows.append({**base, "model": "copy", "token_l1": copy, "vs_copy": 1.0, "seconds_per_step": 0.0,
                     "gflops_per_step": 0.0, **nan_ci})
        errors = batch.pairs[["episode_id"]].assign(copy=token_l1(batch.s_0, batch.target).numpy())
        model_rows = []
        for name, model in models.items():
            model.eval()
            l1, pred = rollout_l1(model, batch, seed=seed)
            errors[name] = token_l1(pred, batch.target).numpy()
            if name not in costs:
                k = min(16, batch.s_0.shape[0])
                costs[name] = step_cost(model, batch.s_0[:k], batch.chunks[0][:k], batch.masks[0][:k])
            model_rows.append({**base, "model": name, "token_l1": l1, "vs_copy": l1 / max(copy, 1e-12),
                               **costs[name]})
        ci = episode_bootstrap(errors, list(models), reference, n_boot, seed)
        rows += [{**r, **nan_ci, **ci[r["model"]]} for r in model_rows]
    cols = ["model", "horizon", "chunks", "pairs", "episodes", "token_l1", "vs_copy", "vs_copy_ci_low",
            "vs_copy_ci_high", "ref_minus_vs_copy", "ref_minus_ci_low", "ref_minus_ci_high", "seconds_per_step",
            "gflops_per_step", "horizon_seconds"]
    return pd.DataFrame(rows, columns=cols)
