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


@torch.no_grad()
def temporal_progression(model, cache, episode_ids: list[str], h: int, alphas: list[float], stride: int = 4,
                         max_pairs: int = 64, seed: int = 0) -> pd.DataFrame:
    """Claim 1.3: decode from a * z + (1 - a) * noise and check that a orders the decoded states in time.

    For each pair (s_t, s_{t+h}): z = encode(s_t, s_{t+h}); noise ~ N(0, std(z)^2) (z's own scale, fixed per pair);
    for each a, decode and find the nearest true frame among s_t .. s_{t+h} (token L1); the score of the pair is the
    Spearman correlation between a and that frame index (1 = a perfectly orders the decoded states).

    Control (``spearman_shuffled_z``, printed beside): the same procedure with the z of ANOTHER pair (the next pair
    in the list, from another episode where there is one). Moving from noise towards any in-distribution z may drift
    the decoded state away from s_t and so "order" frames by itself; the claim holds only where the true z orders
    clearly better than a shuffled one. NaN when there is a single pair.
    Columns: episode_id, t, h, spearman, spearman_shuffled_z, nearest (list of indices, 0 = s_t, h = s_{t+h}).
    """
    model.eval()
    pairs = spread_pairs(eval_pairs(_frames(cache, episode_ids), [h], stride), sorted(episode_ids), max_pairs)
    g = torch.Generator().manual_seed(seed)
    alphas_t = torch.tensor(alphas, dtype=torch.float32)
    seqs, zs = [], []
    for eid, t, hh in pairs.itertuples(index=False):
        seq = torch.from_numpy(np.asarray(cache.tokens(eid)[t : t + hh + 1], dtype=np.float32))  # (h+1, N, D)
        seqs.append(seq)
        zs.append(model.encode(seq[:1], seq[-1:]))  # (1, K, d)
    eids = pairs["episode_id"].tolist()

    def score(seq, z):
        noise = torch.randn(z.shape, generator=g) * z.std()
        z_a = alphas_t[:, None, None] * z + (1 - alphas_t[:, None, None]) * noise  # (A, K, d)
        dec = model.decode(seq[:1].expand(len(alphas), -1, -1), z_a)  # (A, N, D)
        dist = (dec[:, None] - seq[None]).abs().flatten(2).mean(-1)  # (A, h+1)
        nearest = dist.argmin(1).numpy()
        return spearman(alphas, nearest), nearest

    rows = []
    n = len(seqs)
    for i, (eid, t, hh) in enumerate(pairs.itertuples(index=False)):
        rho, nearest = score(seqs[i], zs[i])
        # the donor of the control z: the next pair from another episode (else simply the next pair)
        others = [j for j in range(1, n) if eids[(i + j) % n] != eid]
        shuffled = score(seqs[i], zs[(i + others[0]) % n] if others else zs[(i + 1) % n])[0] if n > 1 else math.nan
        rows.append({"episode_id": eid, "t": int(t), "h": int(hh), "spearman": rho, "spearman_shuffled_z": shuffled,
                     "nearest": nearest.tolist()})
    return pd.DataFrame(rows, columns=["episode_id", "t", "h", "spearman", "spearman_shuffled_z", "nearest"])


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
    was not computed) give NaN intervals. Returns per column: ``mean``, ``ci_low``, ``ci_high`` and, when
    ``reference`` is another column, ``ref_minus`` (reference mean minus this column's) with ``ref_minus_ci_low`` /
    ``ref_minus_ci_high``."""
    eps = list(dict.fromkeys(values["episode_id"]))
    grouped = values.groupby("episode_id", sort=False)
    sums = grouped[columns].sum().loc[eps].to_numpy(np.float64, copy=True)  # (E, M), writable (copy-on-write)
    sums[:, values[columns].isna().any().to_numpy()] = math.nan  # a column with a missing value has no mean
    n_pairs = grouped.size().loc[eps].to_numpy(np.float64)  # (E,)
    counts = episode_draws(len(eps), n_boot, seed)
    means = (counts @ sums) / np.clip(counts @ n_pairs, 1e-12, None)[:, None]  # (n_boot, M)
    point = sums.sum(0) / max(n_pairs.sum(), 1e-12)

    def q(x: np.ndarray, p: float) -> float:
        return float(np.quantile(x, p)) if np.isfinite(x).all() else math.nan

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
    < 0 means the reference is better)."""
    eps = list(dict.fromkeys(errors["episode_id"]))
    per_ep = errors.groupby("episode_id", sort=False)[["copy", *models]].sum().loc[eps]
    sums = per_ep.to_numpy(np.float64)  # (E, 1 + M)
    counts = episode_draws(len(eps), n_boot, seed)
    tot = counts @ sums  # (n_boot, 1 + M)
    ratios = tot[:, 1:] / np.clip(tot[:, :1], 1e-12, None)
    out: dict[str, dict[str, float]] = {}
    point = sums[:, 1:].sum(0) / max(sums[:, 0].sum(), 1e-12)
    for j, m in enumerate(models):
        r = {"vs_copy_ci_low": float(np.quantile(ratios[:, j], 0.025)),
             "vs_copy_ci_high": float(np.quantile(ratios[:, j], 0.975))}
        if reference is not None and reference in models and m != reference:
            k = models.index(reference)
            d = ratios[:, k] - ratios[:, j]
            r.update({"ref_minus_vs_copy": float(point[k] - point[j]), "ref_minus_ci_low": float(np.quantile(d, 0.025)),
                      "ref_minus_ci_high": float(np.quantile(d, 0.975))})
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
