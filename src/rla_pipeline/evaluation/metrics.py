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
    Columns: episode_id, t, h, spearman, nearest (list of indices, 0 = s_t, h = s_{t+h}).
    """
    model.eval()
    pairs = eval_pairs(_frames(cache, episode_ids), [h], stride).head(max_pairs)
    g = torch.Generator().manual_seed(seed)
    alphas_t = torch.tensor(alphas, dtype=torch.float32)
    rows = []
    for eid, t, hh in pairs.itertuples(index=False):
        seq = torch.from_numpy(np.asarray(cache.tokens(eid)[t : t + hh + 1], dtype=np.float32))  # (h+1, N, D)
        s_t, s_th = seq[:1], seq[-1:]
        z = model.encode(s_t, s_th)  # (1, K, d)
        noise = torch.randn(z.shape, generator=g) * z.std()
        z_a = alphas_t[:, None, None] * z + (1 - alphas_t[:, None, None]) * noise  # (A, K, d)
        dec = model.decode(s_t.expand(len(alphas), -1, -1), z_a)  # (A, N, D)
        dist = (dec[:, None] - seq[None]).abs().flatten(2).mean(-1)  # (A, h+1)
        nearest = dist.argmin(1).numpy()
        rows.append({"episode_id": eid, "t": int(t), "h": int(hh), "spearman": spearman(alphas, nearest),
                     "nearest": nearest.tolist()})
    return pd.DataFrame(rows, columns=["episode_id", "t", "h", "spearman", "nearest"])


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
    """All evaluation starts for horizon h (None when no episode is long enough or has actions)."""
    with_actions = [e for e in episode_ids if "action" in cache.steps(e)]
    pairs = eval_pairs(_frames(cache, with_actions), [h], stride)
    if max_pairs:
        pairs = pairs.head(max_pairs)
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
                      fps: float | None = None) -> pd.DataFrame:
    """Token L1 per model and horizon, with the copy baseline and the cost per predicted step.

    Columns: model, horizon, chunks, pairs, token_l1, vs_copy (l1 / copy l1), seconds_per_step, gflops_per_step,
    horizon_seconds (horizon / fps when fps is given).
    """
    rows = []
    for h in horizons:
        batch = rollout_batch(cache, episode_ids, h, chunk, max_actions, stride, max_pairs)
        if batch is None:
            continue
        copy = copy_model_l1(batch)
        n_chunks = len(batch.chunks)
        base = {"horizon": int(h), "chunks": n_chunks, "pairs": len(batch.pairs),
                "horizon_seconds": (h / fps) if fps else math.nan}
        rows.append({**base, "model": "copy", "token_l1": copy, "vs_copy": 1.0, "seconds_per_step": 0.0,
                     "gflops_per_step": 0.0})
        for name, model in models.items():
            model.eval()
            l1, _ = rollout_l1(model, batch, seed=seed)
            k = min(16, batch.s_0.shape[0])
            cost = step_cost(model, batch.s_0[:k], batch.chunks[0][:k], batch.masks[0][:k])
            rows.append({**base, "model": name, "token_l1": l1, "vs_copy": l1 / max(copy, 1e-12), **cost})
    cols = ["model", "horizon", "chunks", "pairs", "token_l1", "vs_copy", "seconds_per_step", "gflops_per_step",
            "horizon_seconds"]
    return pd.DataFrame(rows, columns=cols)
