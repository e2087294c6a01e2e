"""Training samples read from the feature cache: (s_t, s_{t+h}, action chunk, h) pairs, plus RL-stage helpers.

Tokens are read lazily from the memory-mapped cache entries (one ``np.memmap`` per episode, opened on first use in
each DataLoader worker): only the two frames a sample needs are touched. Actions/proprio (a few KB per episode) are
held in memory.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from rla_pipeline.features.cache import FeatureCache
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import json_digest

logger = logging.getLogger(__name__)

SOURCES = ("action", "joint_positions", "proprio")
# world_model.conditioning (the user-facing key) -> the SampleConfig.action_source it reads
CONDITIONING = {"actions": "action", "joint_positions": "joint_positions"}


def conditioning_signal(steps: dict[str, np.ndarray], source: str = "action") -> np.ndarray | None:
    """The per-step conditioning signal of one episode, float32 (T, A), row t conditioning the step t -> t+1;
    None when the episode lacks it.

    ``steps``: ``FeatureCache.steps(eid)`` (``action`` (T, A), ``proprio`` (T, P)). "action": the commanded actions
    (row t is applied after frame t). "joint_positions": ``proprio`` (joint positions, qpos for ManiSkill episodes)
    shifted by one, row t = the positions at frame t+1 (the last row repeats the final positions), so the chunk of a
    pair (t, t+h) is q_{t+1..t+h}: the joint positions the arm passes through up to the target frame, as the paper's
    world model is conditioned (its release uses joint-position targets as actions, a_t ~ q_{t+1}). "proprio": the
    rows unshifted (q_t..q_{t+h-1}).
    """
    if source not in SOURCES:
        raise ValueError(f"conditioning source must be one of {SOURCES}, got {source!r}")
    if source == "action":
        return steps.get("action")
    q = steps.get("proprio")
    if q is None or source == "proprio":
        return q
    return np.concatenate([q[1:], q[-1:]]) if len(q) else q


class ConditionedCache:
    """A FeatureCache view whose ``steps(eid)["action"]`` is the ``source`` conditioning signal (absent when the
    episode lacks it); everything else is the cache's. It lets code written against commanded actions (the
    prediction table's rollouts, ``evaluation.metrics``) evaluate a world model conditioned on joint positions."""

    def __init__(self, cache, source: str = "action"):
        if source not in SOURCES:
            raise ValueError(f"conditioning source must be one of {SOURCES}, got {source!r}")
        self.cache, self.source = cache, source

    def steps(self, eid: str) -> dict[str, np.ndarray]:
        steps = self.cache.steps(eid)
        if self.source == "action":
            return steps
        out = {k: v for k, v in steps.items() if k != "action"}
        sig = conditioning_signal(steps, self.source)
        if sig is not None:
            out["action"] = sig
        return out

    def __getattr__(self, name):  # tokens, manifest, root, ... of the wrapped cache
        if name == "cache":
            raise AttributeError(name)
        return getattr(self.cache, name)


@dataclass
class SampleConfig:
    """How (s_t, s_{t+h}) pairs are drawn.

    h_min, h_max: horizon range in frames; each index i is a start frame t, and h is drawn uniformly from
        [h_min, min(h_max, T-1-t)] deterministically from (seed, epoch, i). Starts with t > T-1-h_min are not used.
    action_source: the conditioning signal (see :func:`conditioning_signal`): "action" (the commanded actions),
        "joint_positions" (the robot's joint positions from ``proprio``, shifted so row t is the position reached
        at frame t+1: the paper's action space) or "proprio" (proprio rows unshifted, row t = state at frame t).
    action_dim: width A of the action chunk; None = the largest action width among the dataset's episodes
        (narrower episodes are zero-padded on the right).
    seed: base seed of the horizon draws.
    """

    h_min: int = 2
    h_max: int = 15
    action_source: str = "action"
    action_dim: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.h_min <= self.h_max:
            raise ValueError(f"need 1 <= h_min <= h_max, got h_min={self.h_min}, h_max={self.h_max}")
        if self.action_source not in SOURCES:
            raise ValueError(f"action_source must be one of {SOURCES}, got {self.action_source!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "SampleConfig":
        return from_dict(cls, d, where="samples")


def action_stats(cache: FeatureCache, episode_ids: Sequence[str], source: str = "action", dim: int | None = None) -> dict[str, np.ndarray]:
    """Per-dimension mean/std float32 (A,) of ``source`` over the frames of ``episode_ids`` (the training episodes).

    Episodes without that signal are skipped; narrower ones are zero-padded to ``dim`` (default: widest).
    std is floored at 1e-6 so constant dimensions normalise to 0, not inf. Use as ``(a - mean) / std``.
    """
    arrays = [a for a in (conditioning_signal(cache.steps(e), source) for e in episode_ids) if a is not None]
    if not arrays:
        raise ValueError(f"none of the {len(episode_ids)} episodes has {source!r}: cannot compute normalisation stats")
    width = dim or max(a.shape[1] for a in arrays)
    cat = np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays]).astype(np.float64)
    return {"mean": cat.mean(0).astype(np.float32), "std": np.maximum(cat.std(0), 1e-6).astype(np.float32)}


class TokenPairDataset(Dataset):
    """Map-style dataset over every usable start frame of ``episode_ids``.

    ``ds[i]`` -> ``{"s_t": float32 (N,D), "s_th": float32 (N,D), "actions": float32 (h_max, A) zero-padded,
    "action_mask": bool (h_max,) (True for the h real steps a_t..a_{t+h-1}), "h": int64, "episode_id": str, "t": int64}``.
    Episodes without ``action_source`` give zero actions and an all-False mask. Call :meth:`set_epoch` each epoch to
    redraw the horizons (same (seed, epoch, index) -> same h).
    """

    def __init__(self, cache: FeatureCache, episodes_index: pd.DataFrame | None, episode_ids: Sequence[str], cfg: SampleConfig | None = None):
        self.cache = cache
        self.cfg = cfg or SampleConfig()
        self.episode_ids = list(episode_ids)
        if episodes_index is not None and "episode_id" in episodes_index:
            unknown = sorted(set(self.episode_ids) - set(episodes_index["episode_id"]))
            if unknown:
                raise KeyError(f"{len(unknown)} episode ids are not in the episode index, e.g. {unknown[:3]}")
        manifest = cache.manifest().set_index("episode_id")
        missing = sorted(set(self.episode_ids) - set(manifest.index))
        if missing:
            raise KeyError(f"{len(missing)} episodes are not in the feature cache {cache.root}, e.g. {missing[:3]}")
        self.frames = np.array([int(manifest.loc[e, "frames"]) for e in self.episode_ids], dtype=np.int64)
        self.num_tokens = int(manifest.loc[self.episode_ids[0], "tokens"]) if self.episode_ids else 0
        self.token_dim = int(manifest.loc[self.episode_ids[0], "dims"]) if self.episode_ids else 0
        self.actions: dict[str, np.ndarray] = {}
        for e in self.episode_ids:
            a = conditioning_signal(cache.steps(e), self.cfg.action_source)
            if a is not None:
                self.actions[e] = a
        widths = [a.shape[1] for a in self.actions.values()]
        self.action_dim = self.cfg.action_dim or (max(widths) if widths else 1)
        if widths and max(widths) > self.action_dim:
            raise ValueError(f"action_dim {self.action_dim} is narrower than the data's {max(widths)}")
        counts = np.maximum(self.frames - self.cfg.h_min, 0)  # starts t in [0, T-1-h_min]
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self.epoch = 0
        self._mmaps: dict[str, np.ndarray] = {}
        # Content digest for the trainer's checkpoint hash: cache keys (encoder, weights, pixels) + step data + config.
        keys = [[e, str(manifest.loc[e, "key"]), str(manifest.loc[e].get("steps_key", ""))] for e in self.episode_ids]
        self.fingerprint = json_digest([keys, dataclasses.asdict(self.cfg)], 16, default=str)

    def __getstate__(self) -> dict[str, Any]:  # memmaps are reopened in each worker
        state = self.__dict__.copy()
        state["_mmaps"] = {}
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(episode position, start frame t) of a flat index."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        ep = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return ep, int(index - self._offsets[ep])

    def horizon(self, index: int) -> int:
        """The horizon h of sample ``index`` in the current epoch (a pure function of seed, epoch, index)."""
        ep, t = self.locate(index)
        h_hi = min(self.cfg.h_max, int(self.frames[ep]) - 1 - t)
        rng = np.random.default_rng([self.cfg.seed, self.epoch, index])
        return int(rng.integers(self.cfg.h_min, h_hi + 1))

    def _tokens(self, eid: str) -> np.ndarray:
        arr = self._mmaps.get(eid)
        if arr is None:
            arr = self._mmaps[eid] = self.cache.tokens(eid)
        return arr

    def __getitem__(self, index: int) -> dict[str, Any]:
        ep, t = self.locate(index)
        eid = self.episode_ids[ep]
        h = self.horizon(index)
        tok = self._tokens(eid)
        actions = np.zeros((self.cfg.h_max, self.action_dim), dtype=np.float32)  # (h_max, A)
        mask = np.zeros(self.cfg.h_max, dtype=bool)
        a = self.actions.get(eid)
        if a is not None:
            actions[:h, : a.shape[1]] = a[t : t + h]
            mask[:h] = True
        return {
            "s_t": torch.from_numpy(np.asarray(tok[t], dtype=np.float32)),  # (N, D)
            "s_th": torch.from_numpy(np.asarray(tok[t + h], dtype=np.float32)),  # (N, D)
            "actions": torch.from_numpy(actions),
            "action_mask": torch.from_numpy(mask),
            "h": torch.tensor(h, dtype=torch.int64),
            "episode_id": eid,
            "t": torch.tensor(t, dtype=torch.int64),
        }
