"""The actionless-BC stage (paper Table 2): BC-ResNet on labelled demos vs BC+RLA.

BC+RLA is the same policy plus a linear latent head, also trained on actionless videos with z targets from the
frozen RLA encoder. Both get the same labelled episodes, seed, initial weights and steps, and the SAME labelled
batches in the same order: a training item is one labelled frame (the one the shared sampler picks) plus, for
BC+RLA only, ``actionless_per_labelled`` actionless frames ADDED on top (drawn from (seed, epoch, index)). So BC+RLA
sees every labelled sample BC sees, when BC sees it, and the actionless videos come in addition, never instead.

``decoded_copies`` (on by default): every labelled training episode is also a second labelled episode whose
frames are the pixel decoder's RGB of its cached DINO tokens, decoded exactly as WMRL's BC-ResNet sees imagined
states (``rl.decoded_env.decode_to_images`` at the simulator camera's size, then resized to the policy's
``image_size`` like any frame); same actions, same task. BC and BC+RLA get the same copies; validation stays on
rendered frames. Without them the policy acts on decoded frames as on unrelated images (``stages.wmrl.decoding_gap``).
No Kedro here.
"""
from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from rla_pipeline.episodes.format import episode_actions
from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy
from rla_pipeline.rl.bc import (
    BCLoss, ImageChunkDataset, resize_frames, select_episodes, shift_images,
)
from rla_pipeline.rl.bc_controls import trained_z
from rla_pipeline.stages.common import (
    EpisodeChoiceConfig, action_dim_of, check_trainer_block, checkpoint_dir, trainer_config,
)
from rla_pipeline.utils.config import from_dict

logger = logging.getLogger(__name__)


@dataclass
class ActionlessBCConfig:
    """``params:actionless_bc``: episodes; policy (BCResNetConfig; action_dim/tasks/latent shape come from the
    data and the RLA); loss (BCLoss; latent weights: paper 0.05 L1 + 0.05 MSE); trainer (TrainerConfig fields
    but run_name/seed/device/checkpoint_dir); actionless_per_labelled (BC+RLA: actionless frames added to each
    labelled one, so a batch of B labelled frames carries B * k actionless ones on top); use_mask (multiply frames
    by the foreground mask; then evaluation.sim.mask_images); balance_tasks (each task's frames repeated so every
    task is drawn about equally often: without it a task's share is its share of the frames, and the long tasks
    (PushT's demos are ~5x PullCube's) crowd out the short ones); decoded_copies (every labelled training episode
    is added a second time with its frames replaced by the pixel decoder's RGB of its cached DINO tokens, decoded
    as WMRL's policy sees imagined states: same actions, task and z targets; for BC and BC+RLA alike, validation
    on rendered frames only; needs the feature cache, ``pixel_decoder_model_all_tasks`` and the simulator camera's
    size from ``params:evaluation``. It teaches the policy to act on decoded frames as on the rendered frames they
    stand for, which WMRL's PPO in imagination relies on; off: rendered frames only)."""

    episodes: EpisodeChoiceConfig = field(default_factory=EpisodeChoiceConfig)
    policy: BCResNetConfig = field(default_factory=BCResNetConfig)
    loss: BCLoss = field(default_factory=BCLoss)
    trainer: dict[str, Any] = field(default_factory=dict)
    actionless_per_labelled: int = 1
    use_mask: bool = False
    balance_tasks: bool = True
    decoded_copies: bool = True

    def __post_init__(self) -> None:
        self.trainer = check_trainer_block(self.trainer, "actionless_bc.trainer")
        if self.actionless_per_labelled < 0:
            raise ValueError("actionless_bc.actionless_per_labelled must be >= 0")

    @classmethod
    def from_dict(cls, d: "dict | ActionlessBCConfig | None") -> "ActionlessBCConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="actionless_bc")


class LabelledPlusActionless(Dataset):
    """Item i = labelled item i, then ``extra`` actionless items, stacked on a leading group axis (1 + extra, ...).

    The length is the labelled set's, so the trainer's sampler (seeded, over len(dataset)) picks the same labelled
    frames in the same order whatever ``extra`` is; the actionless ones are drawn from (seed, epoch, i), and so are
    their random-shift offsets (``shift`` px, applied here): the loss shifts the labelled frames only, from the
    global torch RNG, exactly as it does for BC, so adding actionless frames changes nothing BC's frames see.
    """

    def __init__(self, labelled: ImageChunkDataset, actionless: ImageChunkDataset | None, extra: int, seed: int,
                 shift: int = 0):
        if extra and actionless is None:
            raise ValueError("actionless samples requested but there are no actionless episodes")
        self.labelled, self.actionless, self.extra, self.seed, self.epoch = labelled, actionless, extra, seed, 0
        self.shift = int(shift)
        # the trainer's checkpoint/data key: everything that decides what the items are
        self.fingerprint = "|".join([labelled.fingerprint, getattr(actionless, "fingerprint", "none"),
                                     str(extra), str(seed), f"shift{self.shift}"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int) -> dict:
        items = [self.labelled[index]]
        if self.extra:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            picks = rng.integers(0, len(self.actionless), size=self.extra).tolist()
            ox, oy = rng.integers(0, 2 * self.shift + 1, size=(self.extra, 2)).T
            extra = [self.actionless[j] for j in picks]
            shifted = shift_images(torch.stack([it["image"] for it in extra]), self.shift, ox, oy)
            items += [{**it, "image": img} for it, img in zip(extra, shifted)]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


@contextmanager
def batchnorm_stats_frozen(model: torch.nn.Module):
    """BatchNorm layers normalise with the batch's own statistics (train mode) but leave their running statistics
    unchanged (momentum 0): the actionless frames of BC+RLA shape only the latent loss, never the normalisation
    BC's frames are evaluated with."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    try:
        for m in bns:
            m.momentum = 0.0
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


@dataclass
class GroupedBCLoss:
    """BC (+ RLA latent) loss over batches of :class:`LabelledPlusActionless` items (B, G, ...), group 0 labelled.

    The labelled frames go through ``inner`` (:class:`BCLoss`) exactly as BC's do: same random shift from the
    global RNG, same BatchNorm batch. The actionless groups (already shifted by the dataset) go through the policy
    in a second pass with BatchNorm statistics frozen (:func:`batchnorm_stats_frozen`) and add only latent loss;
    with the latent weights at 0 that pass is skipped, so BC+RLA then trains exactly as BC (tested)."""

    inner: BCLoss

    def __call__(self, model, batch: dict):
        labelled = {k: v[:, 0] for k, v in batch.items()}
        inner = self.inner
        latent_on = model.latent_head is not None and (inner.latent_l1_weight > 0 or inner.latent_mse_weight > 0)
        G = next(iter(batch.values())).shape[1]
        if G == 1 or not latent_on:
            return inner(model, labelled)
        extra = {k: v[:, 1:].flatten(0, 1) for k, v in batch.items()}
        with batchnorm_stats_frozen(model):
            feats_extra = model.features(extra["image"], extra["proprio"] if model.config.proprio_dim else None,
                                         extra["task"] if model.config.num_tasks else None)
        return inner(model, labelled, extra_latent=(feats_extra, extra))


def _image_episodes(store, index, eids, tasks, size, use_mask, with_actions, z_of=None) -> list[dict]:
    rows = index.set_index("episode_id")
    eps = []
    for eid in eids:
        frames = store.read_frames(eid)
        masks = store.read_masks(eid) if use_mask else None
        ep = {"frames": resize_frames(frames, size, masks), "task": tasks.index(rows.loc[eid, "task"])}
        if with_actions:
            ep["actions"] = episode_actions(store.read_steps(eid))
        if z_of is not None:
            ep["z"] = z_of(eid)
        eps.append(ep)
    return eps


def decoded_frames_fn(cache, pixel_decoder, camera_size: int, device: str = "cpu", batch: int = 256):
    """-> eid -> uint8 (T, camera_size, camera_size, 3) numpy: the pixel decoder's RGB of the episode's cached DINO
    tokens, decoded as WMRL's policy sees imagined states (:func:`rla_pipeline.rl.decoded_env.decode_to_images`)."""
    import copy

    from rla_pipeline.rl.decoded_env import decode_to_images

    decoder = copy.deepcopy(pixel_decoder).to(device).eval()
    for p in decoder.parameters():
        p.requires_grad_(False)

    def frames_of(eid: str) -> np.ndarray:
        tokens = torch.from_numpy(np.array(cache.tokens(eid), dtype=np.float32))  # copy: cache memmaps are read-only
        return decode_to_images(decoder, tokens, camera_size, batch).cpu().numpy()

    return frames_of


def bc_datasets(store, index, tasks, cfg: ActionlessBCConfig, sel, pconf, action_dim: int, seed: int, z_of=None,
                decoded_of=None):
    """-> (train LabelledPlusActionless, val LabelledPlusActionless | None). ``z_of`` None: BC (labelled only);
    else BC+RLA (z targets on every frame, ``cfg.actionless_per_labelled`` actionless frames added per item).
    ``decoded_of`` (eid -> decoded uint8 frames at the camera size, :func:`decoded_frames_fn`): each labelled episode
    is added again with those frames (after all the rendered ones; same actions, task and z); required when
    ``cfg.decoded_copies``, ignored otherwise. Validation: rendered frames only."""
    with_latent = z_of is not None
    size, e = pconf.image_size, cfg.episodes
    latent_shape = (pconf.latent_tokens, pconf.latent_dim) if with_latent else None
    lab_eps = _image_episodes(store, index, sel.labelled, tasks, size, cfg.use_mask, True, z_of)
    if cfg.decoded_copies:
        if decoded_of is None:
            raise ValueError(_NO_DECODER)
        lab_eps = lab_eps + [decoded_copy(ep, decoded_of(eid), size, eid) for eid, ep in zip(sel.labelled, lab_eps)]
    labelled = ImageChunkDataset(lab_eps, pconf.chunk, action_dim, stride=e.frame_stride, latent_shape=latent_shape,
                                 balance_tasks=cfg.balance_tasks)
    actionless, extra = None, 0
    if with_latent and sel.actionless and cfg.actionless_per_labelled:
        act_eps = _image_episodes(store, index, sel.actionless, tasks, size, cfg.use_mask, False, z_of)
        actionless = ImageChunkDataset(act_eps, pconf.chunk, action_dim, stride=e.frame_stride,
                                       latent_shape=latent_shape, balance_tasks=cfg.balance_tasks)
        extra = cfg.actionless_per_labelled
    train = LabelledPlusActionless(labelled, actionless, extra, seed, shift=cfg.loss.random_shift)
    val = None
    if sel.val:
        val_eps = _image_episodes(store, index, sel.val, tasks, size, cfg.use_mask, True)
        val = LabelledPlusActionless(ImageChunkDataset(val_eps, pconf.chunk, action_dim, latent_shape=latent_shape),
                                     None, 0, seed)
    return train, val


_NO_DECODER = ("actionless_bc.decoded_copies is on but no pixel decoder and feature cache were given: pass "
               "pixel_decoder_model_all_tasks and the feature cache (the actionless_bc pipeline does), or set "
               "actionless_bc.decoded_copies: false to train on rendered frames only")


def decoded_copy(episode: dict, decoded: np.ndarray, size: int, eid: str = "?") -> dict:
    """A labelled episode dict (``_image_episodes``) with its frames replaced by ``decoded`` (uint8 (T, H, W, 3), one
    per stored frame; never masked) resized to the policy's ``size``; actions, task and z unchanged."""
    T = episode["frames"].shape[0]
    if decoded.shape[0] != T:
        raise ValueError(f"episode {eid}: {decoded.shape[0]} decoded frames (cached tokens) but {T} stored frames: "
                         "rebuild the feature cache")
    return {**episode, "frames": resize_frames(decoded, size)}


def train_bc_policy(store, index: pd.DataFrame, tasks: Sequence[str], params, seed: int, device: str,
                    run_name: str, cache=None, rla=None, checkpoint_root: str | None = None, pixel_decoder=None,
                    evaluation_params: dict | None = None, z_of=None):
    """BC-ResNet (``rla`` None) or BC+RLA (``rla`` + ``cache``). Returns (policy, history DataFrame).

    ``z_of``: episode id -> its z targets (T, K, d); default the frozen ``rla``'s targets of the episode's cached
    tokens (``rl.bc_controls.trained_z``). The controls of ``rl.bc_controls`` (shuffled z, an untrained RLA) pass
    their own.

    ``actionless_bc.decoded_copies`` (on by default) needs ``cache`` and ``pixel_decoder``: labelled episodes are
    added again as the decoder's RGB of their cached tokens at the simulator camera's size
    (``stages.wmrl.camera_size`` of ``evaluation_params``), else a ValueError says so.
    Checkpoints in ``<checkpoint_root>/actionless_bc/<run_name>``.
    """
    from rla_pipeline.training.trainer import train

    cfg = ActionlessBCConfig.from_dict(params)
    tasks = list(tasks)
    e = cfg.episodes
    sel = select_episodes(index, tasks, e.n_labelled_per_task, e.n_val_per_task, e.max_actionless_per_task,
                          e.extra_demos_as_actionless)
    A = action_dim_of(index, sel.labelled)
    with_latent = rla is not None
    pconf = dataclasses.replace(cfg.policy, action_dim=A, num_tasks=len(tasks), task_names=tasks)
    if with_latent:
        pconf = dataclasses.replace(pconf, latent_tokens=rla.config.latent_tokens, latent_dim=rla.config.latent_dim)
    if with_latent and z_of is None:
        z_of = trained_z(rla, cache, pconf.chunk)
    elif not with_latent:
        z_of = None
    decoded_of, copies = None, ""
    if cfg.decoded_copies:
        if cache is None or pixel_decoder is None:
            raise ValueError(_NO_DECODER)
        from rla_pipeline.stages.wmrl import camera_size
        from rla_pipeline.utils.seeding import resolve_device

        cam = camera_size(index, tasks, evaluation_params)
        decoded_of = decoded_frames_fn(cache, pixel_decoder, cam, device=str(resolve_device(device)))
        copies = f" + their decoded copies ({cam} px camera frames)"
    train_ds, val_ds = bc_datasets(store, index, tasks, cfg, sel, pconf, A, seed, z_of, decoded_of)
    logger.info("%s: %d labelled samples + %d actionless added to each (%d labelled episodes%s, %d actionless)",
                run_name, len(train_ds), train_ds.extra, len(sel.labelled), copies,
                len(sel.actionless) if with_latent else 0)
    torch.manual_seed(seed)  # same initial weights for BC and BC+RLA (the latent head is created last)
    policy = BCResNetPolicy(pconf)
    loss = cfg.loss
    if not with_latent:
        loss = dataclasses.replace(loss, latent_l1_weight=0.0, latent_mse_weight=0.0)
    loss = GroupedBCLoss(loss)
    tcfg = trainer_config(cfg.trainer, run_name=run_name, device=device, seed=seed, default_progress=False,
                          checkpoint_dir=checkpoint_dir(checkpoint_root, "actionless_bc", run_name))
    result = train(policy, loss, train_ds, val_ds, tcfg)
    history = result.history.assign(run=run_name)
    if val_ds is not None:
        check = val_action_error_vs_mean_chunk(result.model, train_ds.labelled, val_ds.labelled)
        logger.info("%s: val action MSE %.4f vs per-task mean chunk %.4f (ratio %.3f; >= 1 = learned nothing "
                    "beyond the task's average motion)", run_name, check["val_action_mse_policy"],
                    check["val_action_mse_mean_chunk"], check["val_action_mse_ratio"])
        from rla_pipeline import tracking

        tracking.log_metrics({f"{run_name}/{k}": v for k, v in check.items()})
        last = int(history["step"].max()) if "step" in history and len(history) else 0
        history = pd.concat([history, pd.DataFrame([{"run": run_name, "step": last, "split": "mean_chunk_check",
                                                     **check}])], ignore_index=True)
    return result.model, history


@torch.no_grad()
def val_action_error_vs_mean_chunk(policy: BCResNetPolicy, train: ImageChunkDataset, val: ImageChunkDataset,
                                   batch: int = 128) -> dict[str, float]:
    """Validation action MSE of ``policy`` beside the per-task mean-chunk predictor's (the average training chunk
    of the frame's task, the best action-blind guess): a policy that learned nothing from the image scores a ratio
    near 1 or above. Masked like the training loss; frames in their stored form (no random shift)."""
    def chunks_by_task(ds: ImageChunkDataset):
        out: dict[int, list] = {}
        for e in ds.episodes:
            if "chunks" in e:
                out.setdefault(e["task"], []).append((e["chunks"], e["mask"]))
        return out

    means = {}
    for task, pairs in chunks_by_task(train).items():
        c = torch.cat([p[0] for p in pairs])  # (T, H, A)
        m = torch.cat([p[1] for p in pairs]).to(c.dtype)[..., None]  # (T, H, 1)
        means[task] = (c * m).sum(0) / m.sum(0).clamp_min(1.0)  # (H, A)
    policy = policy.eval()
    err_p = err_m = count = 0.0
    items = [(i, t) for i, e in enumerate(val.episodes) if "chunks" in e for t in range(e["T"])]
    for s in range(0, len(items), batch):
        rows = []
        for i, t in items[s:s + batch]:
            e = val.episodes[i]
            rows.append((e["frames"][t], e["chunks"][t], e["mask"][t], e["task"],
                         e["proprio"][t, :val.proprio_dim] if val.proprio_dim and e["proprio"] is not None
                         else torch.zeros(val.proprio_dim)))
        img = torch.stack([r[0] for r in rows])
        target = torch.stack([r[1] for r in rows])
        mask = torch.stack([r[2] for r in rows]).to(target.dtype)[..., None]
        task = torch.tensor([r[3] for r in rows], dtype=torch.long)
        proprio = torch.stack([r[4] for r in rows]) if policy.config.proprio_dim else None
        pred = policy.act(img, proprio=proprio, task=task if policy.config.num_tasks else None).float()
        mean = torch.stack([means.get(int(k), torch.zeros_like(target[0])) for k in task])
        err_p += float((((pred - target) ** 2) * mask).sum())
        err_m += float((((mean - target) ** 2) * mask).sum())
        count += float(mask.sum()) * target.shape[-1]
    count = max(count, 1.0)
    p, m = err_p / count, err_m / count
    return {"val_action_mse_policy": p, "val_action_mse_mean_chunk": m, "val_action_mse_ratio": p / max(m, 1e-12)}


def train_bc(episodes, episode_index: pd.DataFrame, params: dict, tasks: list[str], seed: int, device: str,
             checkpoint_root: str | None = None, feature_cache=None, pixel_decoder=None,
             evaluation_params: dict | None = None):
    """Labelled demos (+ their decoded copies: ``feature_cache``, ``pixel_decoder``, ``evaluation_params`` for the
    camera size) -> BC-ResNet policy (+ its training history)."""
    return train_bc_policy(episodes, episode_index, tasks, params, seed, device, run_name="bc_policy",
                           cache=feature_cache, checkpoint_root=checkpoint_root, pixel_decoder=pixel_decoder,
                           evaluation_params=evaluation_params)


def train_bc_rla(episodes, episode_index: pd.DataFrame, feature_cache, rla_model, params: dict, tasks: list[str],
                 seed: int, device: str, checkpoint_root: str | None = None, pixel_decoder=None,
                 evaluation_params: dict | None = None):
    """Labelled demos (+ their decoded copies, as :func:`train_bc`) + actionless videos (z targets from the frozen
    RLA encoder) -> BC+RLA policy (+ history)."""
    return train_bc_policy(episodes, episode_index, tasks, params, seed, device, run_name="bc_rla_policy",
                           cache=feature_cache, rla=rla_model, checkpoint_root=checkpoint_root,
                           pixel_decoder=pixel_decoder, evaluation_params=evaluation_params)
