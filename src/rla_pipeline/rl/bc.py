"""Behaviour cloning data and losses (plain torch; the shared trainer runs them).

- :class:`ImageChunkDataset`: frames of labelled demos (image -> action chunk) and of actionless videos
  (image -> RLA latent z target), for BC-ResNet and BC+RLA.
- :func:`latent_targets`: z_t = rla.encode(s_t, s_{t+h}) from cached DINO tokens (frozen RLA encoder), h = chunk.
- :class:`TokenChunkDataset`: cached DINO tokens of demos -> action chunk, for the token policy's BC warm start.
- :class:`BCLoss` / :class:`TokenBCLoss`: the trainer's ``loss_fn(model, batch) -> (loss, metrics)``.
"""
from __future__ import annotations


from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import nested_digest


@dataclass
class EpisodeSelection:
    """Which episodes each policy sees (per task, sorted ids, so the choice is deterministic).

    labelled: demos with actions used for BC; val: further demos held out for validation; actionless: videos used
    only through z targets (kind "actionless", plus the demos beyond labelled+val when ``extra_demos_as_actionless``).
    """

    labelled: list[str]
    val: list[str]
    actionless: list[str]


def select_episodes(index: pd.DataFrame, tasks: Sequence[str], n_labelled: int, n_val: int,
                    max_actionless: int, extra_demos_as_actionless: bool = True) -> EpisodeSelection:
    """Split the episode index (``episode_id, task, kind, action_dim``) per task into labelled / val / actionless.

    Per task: the first ``n_labelled`` demos are labelled, the next ``n_val`` validation. A task with fewer demos
    than ``n_labelled + n_val`` keeps its ``n_val`` validation demos (while it has at least two) and labels the
    rest, so one setting serves tasks with different demo counts (``ingestion.simulation.task_demos``)."""
    lab, val, act = [], [], []
    for task in tasks:
        rows = index[index["task"] == task].sort_values("episode_id")
        demos = rows[(rows["kind"] == "demo") & rows["action_dim"].notna()]["episode_id"].tolist()
        if len(demos) < 1:
            raise ValueError(f"task {task!r}: no labelled demo episodes in the episode index")
        n_val_t = min(n_val, len(demos) - 1)
        n_lab_t = min(n_labelled, len(demos) - n_val_t)
        lab += demos[:n_lab_t]
        val += demos[n_lab_t:n_lab_t + n_val_t]
        pool = rows[rows["kind"] == "actionless"]["episode_id"].tolist()
        if extra_demos_as_actionless:
            pool += demos[n_lab_t + n_val_t:]
        act += pool[:max_actionless]
    return EpisodeSelection(labelled=lab, val=val, actionless=act)


def resize_frames(frames: np.ndarray, size: int, masks: np.ndarray | None = None) -> torch.Tensor:
    """uint8 (T,H,W,3) (optionally times a bool (T,H,W) mask) -> uint8 (T,size,size,3), antialiased bilinear."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    if masks is not None:
        x = x * torch.from_numpy(np.ascontiguousarray(masks))[..., None].to(x.dtype)
    if x.shape[1:3] == (size, size):
        return x.contiguous()
    x = x.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def sliding_action_chunks(actions: np.ndarray, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """actions (T,A) -> chunks (T,H,A) with a_{t..t+H-1} (zero-padded past the end) and mask (T,H)."""
    a = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
    T, A = a.shape
    padded = torch.cat([a, torch.zeros(chunk, A)], 0)  # (T+H, A)
    idx = torch.arange(T)[:, None] + torch.arange(chunk)[None, :]  # (T, H)
    return padded[idx], idx < T


@torch.no_grad()
def latent_targets(rla, tokens: np.ndarray | torch.Tensor, h: int, batch: int = 64) -> torch.Tensor:
    """z_t = rla.encode(s_t, s_{min(t+h, T-1)}) for every frame t: tokens (T,N,D) -> z (T,K,d) float32."""
    s = torch.from_numpy(np.array(tokens, dtype=np.float32))  # copy: cache tokens are read-only memmaps
    T = s.shape[0]
    nxt = torch.clamp(torch.arange(T) + h, max=T - 1)
    out = [rla.encode(s[i:i + batch], s[nxt[i:i + batch]]) for i in range(0, T, batch)]
    return torch.cat(out, 0).float()


class ImageChunkDataset(Dataset):
    """Frames -> (action chunk | nothing) and (z target | nothing).

    Episodes are given as dicts: ``frames`` uint8 (T,S,S,3), ``actions`` float32 (T,A) | None, ``z`` (T,K,d) | None,
    ``proprio`` (T,P) | None, ``task`` int. Every ``stride``-th frame is a sample. Labelled frames are repeated so
    that they are at least ``labelled_fraction`` of the samples (the trainer samples uniformly). With
    ``balance_tasks`` every task's frames are repeated to about the count of the task with the most frames
    (:func:`balance_by_task`), so a uniform sampler draws each task about equally often whatever its episode lengths.
    Item: ``image`` uint8 (S,S,3), ``actions`` (H,A), ``action_mask`` bool (H,) (all False when unlabelled),
    ``z`` (K,d) (zeros when absent), ``has_z`` bool, ``task`` long, ``proprio`` (P,) (zeros when absent).
    """

    def __init__(self, episodes: list[dict], chunk: int, action_dim: int, stride: int = 1,
                 labelled_fraction: float = 0.0, latent_shape: tuple[int, int] | None = None, proprio_dim: int = 0,
                 balance_tasks: bool = False):
        if not episodes:
            raise ValueError("ImageChunkDataset needs at least one episode")
        self.episodes = []
        for ep in episodes:
            T = ep["frames"].shape[0]
            e = {"frames": ep["frames"], "task": int(ep.get("task", 0)), "T": T}
            if ep.get("actions") is not None:
                e["chunks"], e["mask"] = sliding_action_chunks(ep["actions"][:, :action_dim], chunk)
            e["z"] = None if ep.get("z") is None else torch.as_tensor(ep["z"], dtype=torch.float32)
            e["proprio"] = None if ep.get("proprio") is None else torch.as_tensor(ep["proprio"], dtype=torch.float32)
            self.episodes.append(e)
        self.chunk, self.action_dim, self.proprio_dim = chunk, action_dim, proprio_dim
        self.fingerprint = nested_digest(
            episodes, [chunk, action_dim, stride, labelled_fraction, latent_shape, proprio_dim, balance_tasks])
        self.latent_shape = latent_shape or (1, 1)
        lab = [(i, t) for i, e in enumerate(self.episodes) if "chunks" in e for t in range(0, e["T"], stride)]
        unl = [(i, t) for i, e in enumerate(self.episodes) if "chunks" not in e for t in range(0, e["T"], stride)]
        reps = 1
        if lab and unl and labelled_fraction > 0:
            reps = max(1, int(np.ceil(labelled_fraction * len(unl) / ((1 - labelled_fraction) * len(lab)))))
        if balance_tasks:
            lab, unl = balance_by_task(lab, self.episodes), balance_by_task(unl, self.episodes)
        self.items = lab * reps + unl
        self.num_labelled, self.num_unlabelled = len(lab), len(unl)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        i, t = self.items[index]
        e = self.episodes[i]
        if "chunks" in e:
            actions, mask = e["chunks"][t], e["mask"][t]
        else:
            actions, mask = torch.zeros(self.chunk, self.action_dim), torch.zeros(self.chunk, dtype=torch.bool)
        z = e["z"][t] if e["z"] is not None else torch.zeros(self.latent_shape)
        proprio = torch.zeros(self.proprio_dim)
        if self.proprio_dim and e["proprio"] is not None:
            proprio = e["proprio"][t, :self.proprio_dim]
        return {"image": e["frames"][t], "actions": actions, "action_mask": mask, "z": z,
                "has_z": torch.tensor(e["z"] is not None), "task": torch.tensor(e["task"], dtype=torch.long),
                "proprio": proprio}


def balance_by_task(items: list[tuple[int, int]], episodes: list[dict]) -> list[tuple[int, int]]:
    """(episode, frame) items -> the same items with each task's repeated round(max count / its count) times
    (at least once), in the original order within a task: equal task shares to within one repetition's rounding."""
    by_task: dict[int, list[tuple[int, int]]] = {}
    for it in items:
        by_task.setdefault(int(episodes[it[0]]["task"]), []).append(it)
    if len(by_task) < 2:
        return list(items)
    most = max(len(v) for v in by_task.values())
    out: list[tuple[int, int]] = []
    for task in sorted(by_task):
        out += by_task[task] * max(1, int(round(most / len(by_task[task]))))
    return out


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by ``pad`` px and crop back at a random offset per image.
    uint8 (B,H,W,3) -> uint8 (B,H,W,3)."""
    if pad <= 0:
        return images
    B = images.shape[0]
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    return shift_images(images, pad, ox, oy)


def shift_images(images: torch.Tensor, pad: int, ox, oy) -> torch.Tensor:
    """:func:`random_shift` with given offsets: uint8 (B,H,W,3), ``ox``/``oy`` (B,) ints in [0, 2 pad] ->
    uint8 (B,H,W,3), each image replicate-padded by ``pad`` px and cropped back at (ox[b], oy[b])."""
    if pad <= 0:
        return images
    _, H, W, _ = images.shape
    x = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    out = torch.stack([x[b, :, int(oy[b]):int(oy[b]) + H, int(ox[b]):int(ox[b]) + W] for b in range(len(x))])
    return out.to(torch.uint8).permute(0, 2, 3, 1)


def _masked_action_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2  # (B, H, A)
    m = mask[..., None].to(err.dtype)
    return (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)


@dataclass
class BCLoss:
    """BC (+ RLA latent) loss. action: masked MSE/L1 over the chunk on labelled samples; latent (when the policy
    has a latent head and the weights are > 0): ``latent_l1_weight * L1 + latent_mse_weight * MSE`` between the
    linear head's z and the frozen RLA encoder's z, on every sample that has one (paper: 0.05 + 0.05)."""

    action_loss: str = "mse"  # "mse" | "l1"
    latent_l1_weight: float = 0.05
    latent_mse_weight: float = 0.05
    random_shift: int = 4  # px of random-shift augmentation in training mode (0 = none)

    @classmethod
    def from_dict(cls, d: dict | None) -> "BCLoss":
        return from_dict(cls, d, where="BCLoss")

    def __call__(self, model, batch: dict, extra_latent: tuple[torch.Tensor, dict] | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """``extra_latent``: (features (M, F), batch) of further frames that add latent loss only (BC+RLA's
        actionless frames, passed through the policy by the caller); their z targets join the labelled ones'."""
        images = batch["image"]
        if model.training and self.random_shift > 0:
            images = random_shift(images.cpu(), self.random_shift).to(images.device)
        c = model.config
        feats = model.features(images, batch["proprio"] if c.proprio_dim else None,
                               batch["task"] if c.num_tasks else None)
        mask = batch["action_mask"]
        loss = torch.zeros((), device=feats.device)
        metrics: dict[str, float] = {}
        if bool(mask.any()):
            pred = model.action_from_features(feats)
            action = _masked_action_loss(pred, batch["actions"], mask, self.action_loss)
            loss = loss + action
            metrics["action_loss"] = float(action.detach())
            metrics["action_mse"] = float(_masked_action_loss(pred.detach(), batch["actions"], mask, "mse"))
        if model.latent_head is not None and (self.latent_l1_weight > 0 or self.latent_mse_weight > 0):
            parts = [(feats, batch)] + ([extra_latent] if extra_latent is not None else [])
            zp = [model.latent_from_features(f[b["has_z"]]) for f, b in parts if bool(b["has_z"].any())]
            if zp:
                zp = torch.cat(zp)
                zt = torch.cat([b["z"][b["has_z"]] for f, b in parts if bool(b["has_z"].any())]).to(zp.dtype)
                l1, mse = F.l1_loss(zp, zt), F.mse_loss(zp, zt)
                loss = loss + self.latent_l1_weight * l1 + self.latent_mse_weight * mse
                metrics["latent_l1"], metrics["latent_mse"] = float(l1.detach()), float(mse.detach())
        metrics["loss"] = float(loss.detach())
        return loss, metrics


class TokenChunkDataset(Dataset):
    """Cached DINO tokens of labelled demos -> action chunk. ``token_seqs`` float16/32 (T,N,D) (memmaps are fine).
    Item: ``tokens`` float32 (N,D), ``actions`` (H,A), ``action_mask`` (H,), ``task`` long."""

    def __init__(self, token_seqs: list, actions: list[np.ndarray], tasks: list[int], chunk: int, action_dim: int,
                 stride: int = 1):
        self.tokens = token_seqs
        self.chunks = [sliding_action_chunks(a[:, :action_dim], chunk) for a in actions]
        self.tasks = tasks
        self.items = [(i, t) for i, seq in enumerate(token_seqs) for t in range(0, min(len(seq), len(actions[i])), stride)]
        self.fingerprint = nested_digest([np.asarray(t) for t in token_seqs], actions, tasks, [chunk, action_dim, stride])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        i, t = self.items[index]
        chunks, mask = self.chunks[i]
        return {"tokens": torch.from_numpy(np.asarray(self.tokens[i][t], dtype=np.float32)), "actions": chunks[t],
                "action_mask": mask[t], "task": torch.tensor(self.tasks[i], dtype=torch.long)}


@dataclass
class TokenBCLoss:
    """Masked MSE between the token policy's mean chunk and the demo chunk (the Gaussian's std is left to PPO)."""

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        task = batch["task"] if model.config.num_tasks else None
        pred = model.action_mean(batch["tokens"], task=task)
        loss = _masked_action_loss(pred, batch["actions"], batch["action_mask"], "mse")
        return loss, {"loss": float(loss.detach()), "action_mse": float(loss.detach())}
