"""The DINO-to-RGB decoder stage (the paper's stage 1) as plain functions: split, dataset, training, evaluation.

Used by the ``pixel_decoder`` Kedro pipeline (thin nodes). Training pairs are (cached DINO tokens of frame t, the
episode's frame t resized to the decoder's output size), split by episode with the RLA stage's split function, so
with the same ``split`` block (the default) the world models' validation episodes are never seen by the decoder.
Two decoders: :func:`train_pixel_decoder` never sees ``split.heldout_task`` (the held-out rows of its metrics, the
decoded world-model table); :func:`train_pixel_decoder_all_tasks` adds that task's episodes (as ``rla_model`` does)
and is the one WMRL acts through, with a per-task record of what it trained on (:func:`decoder_training_record`).
Evaluation reports the decoder's own reconstruction quality on held-out episodes (PSNR, SSIM, LPIPS when local
weights are given) next to the mean-training-image baseline, and a PNG grid of true vs decoded frames.
Decoding predicted tokens later: :func:`rla_pipeline.models.pixel_decoder.decode_tokens`.

Floor: above ``features``/``episodes``/``models``/``training``/``evaluation``, below ``pipelines``. No Kedro here.
Torch is imported inside the functions so importing this module stays cheap.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from rla_pipeline.stages.common import check_trainer_block, checkpoint_dir, episode_ids, sample_token_stats, trainer_config
from rla_pipeline.stages.rla import SplitConfig
from rla_pipeline.stages.rla import split_episodes as rla_split_episodes
from rla_pipeline.stages.rla import training_episode_ids
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import json_digest

logger = logging.getLogger(__name__)


@dataclass
class PixelDecoderEvalConfig:
    """Evaluation on held-out episodes.

    stride: frames between evaluated frames of an episode (every frame: 1).
    max_frames: cap on evaluated frames per split (evenly thinned beyond it).
    batch_size: frames per decoding pass.
    grid_frames: columns of the true-vs-decoded PNG grid (frames from the val episodes, evenly spread).
    lpips_backbone_weights, lpips_linear_weights: local files for LPIPS (see ``evaluation.image_metrics``);
        null = LPIPS reported as unavailable. Nothing is downloaded.
    """

    stride: int = 4
    max_frames: int = 512
    batch_size: int = 64
    grid_frames: int = 8
    lpips_backbone_weights: str | None = None
    lpips_linear_weights: str | None = None

    def __post_init__(self) -> None:
        if min(self.stride, self.max_frames, self.batch_size, self.grid_frames) < 1:
            raise ValueError("pixel_decoder.eval: stride, max_frames, batch_size and grid_frames must be >= 1")


@dataclass
class DecodedWorldModelEvalConfig:
    """Decoded world-model predictions (``stages.world_model_images``): SSIM / PSNR of decoded rollouts.

    Horizons, chunk, stride, pairs, bootstrap resamples and pictured episodes are the world-model table's
    (``world_model.eval``), so the decoded numbers are of the same rollouts; these only narrow it.
    max_pairs: evaluation starts per horizon; null = ``world_model.eval.max_pairs`` (the token table's very pairs);
        a smaller number keeps the first of the same spread order (a subset of the token table's pairs).
    batch_size: frames per decoding pass.
    psnr_max_db: cap of per-frame PSNR (identical frames give inf; 8-bit rounding alone is about 59 dB).
    """

    max_pairs: int | None = None
    batch_size: int = 64
    psnr_max_db: float = 60.0

    def __post_init__(self) -> None:
        if (self.max_pairs is not None and self.max_pairs < 1) or self.batch_size < 1 or self.psnr_max_db <= 0:
            raise ValueError("pixel_decoder.world_models: max_pairs (or null), batch_size and psnr_max_db must be > 0")


@dataclass
class PixelDecoderStageConfig:
    """``params:pixel_decoder``.

    split: episode split (the RLA stage's ``SplitConfig``; keep it equal to ``rla.split`` so the decoder never sees
        the world models' validation episodes).
    model: ``models.pixel_decoder.PixelDecoderConfig`` fields (num_tokens / token_dim come from the cache).
    trainer: ``training.trainer.TrainerConfig`` fields (run_name and device are set here).
    mask_background: multiply the target frames by the episode's foreground mask (what DINO saw when
        ``features.encoder.mask_background``); false: decode to the full frame.
    stats_max_frames: training frames sampled for the per-dim token mean/std.
    eval: :class:`PixelDecoderEvalConfig`.
    world_models: :class:`DecodedWorldModelEvalConfig` (decoded world-model rollouts; LPIPS weights from ``eval``).
    """

    split: SplitConfig = field(default_factory=SplitConfig)
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    mask_background: bool = False
    stats_max_frames: int = 2000
    eval: PixelDecoderEvalConfig = field(default_factory=PixelDecoderEvalConfig)
    world_models: DecodedWorldModelEvalConfig = field(default_factory=DecodedWorldModelEvalConfig)

    def __post_init__(self) -> None:
        self.trainer = check_trainer_block(self.trainer, "pixel_decoder.trainer")

    @classmethod
    def from_dict(cls, d: dict | None) -> "PixelDecoderStageConfig":
        return from_dict(cls, d, where="pixel_decoder")


def split_pixel_decoder_episodes(episode_index: pd.DataFrame, feature_manifest: pd.DataFrame, params: dict,
                                 seed: int) -> pd.DataFrame:
    """Deterministic split of the cached episodes (the RLA stage's function) -> DataFrame(episode_id, task, kind, split)."""
    split = PixelDecoderStageConfig.from_dict(params).split
    return rla_split_episodes(episode_index, feature_manifest, {"split": vars(split)}, seed)


def entry_camera(cache, eid: str) -> str | None:
    """The camera whose frames an episode's cache entry encodes (from the entry header; None if not recorded)."""
    from rla_pipeline.features.cache import read_header

    row = cache.manifest().set_index("episode_id").loc[eid]
    header, _ = read_header(cache.root / row["path"])
    return (header.get("__metadata__") or {}).get("camera")


class TokenFrameDataset:
    """Map-style dataset of (tokens, frame) pairs over every frame of ``episode_ids`` (frame_stride apart).

    ``ds[i]`` -> ``{"tokens": float32 (N, D), "image": float32 (3, S, S) in [0, 1], "episode_id": str, "t": int64}``.
    Tokens are read lazily from the cache's memory maps; frames are decoded once at construction, resized to S and
    held as uint8 (S*S*3 bytes per frame: 12 KB at 64 px; at large S and many episodes, mind the memory).
    The frames come from the camera each cache entry encodes, so tokens and pixels are of the same view.
    """

    def __init__(self, cache, store, episode_ids: Sequence[str], image_size: int, mask_background: bool = False,
                 frame_stride: int = 1) -> None:
        import torch

        from rla_pipeline.models.pixel_decoder import frames_to_images

        self.cache, self.episode_ids, self.image_size = cache, list(episode_ids), int(image_size)
        manifest = cache.manifest().set_index("episode_id")
        missing = sorted(set(self.episode_ids) - set(manifest.index))
        if missing:
            raise KeyError(f"{len(missing)} episodes are not in the feature cache {cache.root}, e.g. {missing[:3]}")
        self.num_tokens = int(manifest.loc[self.episode_ids[0], "tokens"]) if self.episode_ids else 0
        self.token_dim = int(manifest.loc[self.episode_ids[0], "dims"]) if self.episode_ids else 0
        self.images: dict[str, torch.Tensor] = {}  # eid -> uint8 (T, 3, S, S)
        index: list[tuple[int, int]] = []
        for ep, eid in enumerate(self.episode_ids):
            cam = entry_camera(cache, eid)
            frames = store.read_frames(eid, cam)  # uint8 (T, H, W, 3)
            if mask_background:
                masks = store.read_masks(eid, cam)  # bool (T, H, W) or None
                if masks is not None:
                    frames = frames * masks[..., None]
            n_tok = int(manifest.loc[eid, "frames"])
            if len(frames) != n_tok:
                raise ValueError(f"episode {eid}: {len(frames)} video frames but {n_tok} cached token frames")
            imgs = frames_to_images(frames, self.image_size)  # (T, 3, S, S) in [0, 1]
            self.images[eid] = (imgs * 255.0).round().to(torch.uint8)
            index.extend((ep, t) for t in range(0, n_tok, frame_stride))
        self.index = np.array(index, dtype=np.int64).reshape(-1, 2)
        self._mmaps: dict[str, np.ndarray] = {}
        # Content digest for the trainer's checkpoint hash: cache keys (encoder, weights, pixels) + target recipe.
        keys = [[e, str(manifest.loc[e, "key"])] for e in self.episode_ids]
        self.fingerprint = json_digest([keys, self.image_size, bool(mask_background), int(frame_stride)], 16)

    def __getstate__(self) -> dict[str, Any]:  # memmaps are reopened in each DataLoader worker
        state = self.__dict__.copy()
        state["_mmaps"] = {}
        return state

    def __len__(self) -> int:
        return len(self.index)

    def _tokens(self, eid: str) -> np.ndarray:
        arr = self._mmaps.get(eid)
        if arr is None:
            arr = self._mmaps[eid] = self.cache.tokens(eid)
        return arr

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        ep, t = (int(v) for v in self.index[i])
        eid = self.episode_ids[ep]
        return {
            "tokens": torch.from_numpy(np.asarray(self._tokens(eid)[t], dtype=np.float32)),  # (N, D)
            "image": self.images[eid][t].float() / 255.0,  # (3, S, S)
            "episode_id": eid,
            "t": torch.tensor(t, dtype=torch.int64),
        }

    def mean_image(self):
        """Mean of every frame of the dataset's episodes: float32 (3, S, S) in [0, 1] (the evaluation's baseline)."""
        import torch

        total, count = None, 0
        for imgs in self.images.values():
            s = imgs.double().sum(0)
            total = s if total is None else total + s
            count += imgs.shape[0]
        return (total / max(count, 1) / 255.0).float() if total is not None else torch.full(
            (3, self.image_size, self.image_size), 0.5)


def build_pixel_decoder_datasets(feature_cache, episode_store, splits: pd.DataFrame, params: dict,
                                 include_heldout_task: bool = False):
    """-> (train TokenFrameDataset, val TokenFrameDataset | None) over the train/val splits.

    ``include_heldout_task``: the train set also holds every episode of the held-out task
    (``stages.rla.training_episode_ids``); validation is the val split either way."""
    from rla_pipeline.models.pixel_decoder import PixelDecoderConfig

    p = PixelDecoderStageConfig.from_dict(params)
    size = PixelDecoderConfig.from_dict(p.model).image_size  # also checks the model block before decoding videos
    train_ids, val_ids = training_episode_ids(splits, include_heldout_task), episode_ids(splits, "val")
    if not train_ids:
        raise ValueError("pixel_decoder: the split has no train episodes (ingest more or lower split.val_fraction)")
    train_ds = TokenFrameDataset(feature_cache, episode_store, train_ids, size, p.mask_background)
    # validation during training: every eval.stride-th frame is plenty for a loss curve
    val_ds = TokenFrameDataset(feature_cache, episode_store, val_ids, size, p.mask_background,
                               frame_stride=p.eval.stride) if val_ids else None
    return train_ds, val_ds


def build_pixel_decoder(feature_cache, train_ds: TokenFrameDataset, params: dict, seed: int = 0):
    """A fresh decoder sized from the data (N, D) and ``params.model``, with training-set statistics set."""
    from rla_pipeline.models.pixel_decoder import PixelDecoder, PixelDecoderConfig

    p = PixelDecoderStageConfig.from_dict(params)
    cfg = PixelDecoderConfig.from_dict({"num_tokens": train_ds.num_tokens, "token_dim": train_ds.token_dim, **p.model})
    model = PixelDecoder(cfg)
    mean, std = sample_token_stats(feature_cache, train_ds.episode_ids, p.stats_max_frames, seed)
    model.set_stats(mean, std, train_ds.mean_image())
    return model


def _train_decoder(feature_cache, episode_store, splits: pd.DataFrame, params: dict, device: str,
                   checkpoint_root: str | None, include_heldout_task: bool, run_name: str):
    """-> (trained model (CPU, eval mode), its train TokenFrameDataset); checkpoints in
    ``<checkpoint_root>/<run_name>``."""
    from rla_pipeline.models.pixel_decoder import pixel_decoder_loss
    from rla_pipeline.training.trainer import train

    p = PixelDecoderStageConfig.from_dict(params)
    train_ds, val_ds = build_pixel_decoder_datasets(feature_cache, episode_store, splits, params, include_heldout_task)
    trainer_cfg = trainer_config(p.trainer, run_name=run_name, device=device,
                                 checkpoint_dir=checkpoint_dir(checkpoint_root, run_name))
    model = build_pixel_decoder(feature_cache, train_ds, params, seed=trainer_cfg.seed)
    logger.info("%s: %d train frames (%d episodes), %d val frames; %d parameters", run_name, len(train_ds),
                len(train_ds.episode_ids), len(val_ds) if val_ds else 0, sum(q.numel() for q in model.parameters()))
    result = train(model, pixel_decoder_loss, train_ds, val_ds, trainer_cfg)
    logger.info("%s final validation: %s", run_name, result.final_val)
    return result.model, train_ds


def train_pixel_decoder(feature_cache, episode_store, splits: pd.DataFrame, params: dict, device: str,
                        checkpoint_root: str | None = None):
    """Train the decoder on the train split through the shared trainer -> trained model (CPU, eval mode;
    checkpoints in ``<checkpoint_root>/pixel_decoder``). The held-out task (``split.heldout_task``) is never seen:
    this is the decoder of ``pixel_decoder_metrics`` (its heldout_task rows) and of the decoded world-model table."""
    return _train_decoder(feature_cache, episode_store, splits, params, device, checkpoint_root,
                          include_heldout_task=False, run_name="pixel_decoder")[0]


def decoder_training_record(model, train_ds: TokenFrameDataset, splits: pd.DataFrame) -> pd.DataFrame:
    """Which tasks a decoder was trained on: one row per task with its training episodes and frames, and the
    decoder's weights digest (``utils.hashing.state_dict_digest``), so a reader can tell the record is of the very
    decoder it holds (``stages.wmrl.check_decoder_covers_tasks``)."""
    from rla_pipeline.utils.hashing import state_dict_digest

    task_of = splits.set_index("episode_id")["task"]
    per_ep = np.bincount(train_ds.index[:, 0], minlength=len(train_ds.episode_ids)) if len(train_ds) else \
        np.zeros(len(train_ds.episode_ids), dtype=np.int64)
    df = pd.DataFrame({"task": [task_of[e] for e in train_ds.episode_ids], "frames": per_ep})
    out = df.groupby("task", sort=True).agg(train_episodes=("frames", "size"), train_frames=("frames", "sum"))
    return out.reset_index().assign(decoder_digest=state_dict_digest(model))


def train_pixel_decoder_all_tasks(feature_cache, episode_store, splits: pd.DataFrame, params: dict, device: str,
                                  checkpoint_root: str | None = None):
    """The decoder WMRL acts through: the same recipe on the same split's train episodes PLUS every episode of the
    held-out task (``stages.rla.training_episode_ids``, as ``rla_model``), so it has seen every task Table 3
    reports. -> (model, training record (:func:`decoder_training_record`)); checkpoints in
    ``<checkpoint_root>/pixel_decoder_all_tasks``. The held-out :func:`train_pixel_decoder` stays the decoder of the
    generalisation rows."""
    model, train_ds = _train_decoder(feature_cache, episode_store, splits, params, device, checkpoint_root,
                                     include_heldout_task=True, run_name="pixel_decoder_all_tasks")
    record = decoder_training_record(model, train_ds, splits)
    logger.info("pixel_decoder_all_tasks trained on:\n%s", record.drop(columns="decoder_digest").to_string(index=False))
    return model, record


def _eval_frames(ds: TokenFrameDataset, max_frames: int) -> np.ndarray:
    """Indices of at most ``max_frames`` dataset items, evenly spread (deterministic)."""
    n = len(ds)
    if n <= max_frames:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_frames).round().astype(np.int64))


def reconstruction_quality(model, ds: TokenFrameDataset, max_frames: int, batch_size: int, lpips=None
                           ) -> dict[str, dict[str, float]]:
    """Decoder and mean-image baseline against the true frames of ``ds``.

    -> ``{"decoder": {...}, "mean_image": {...}}``, each with frames, mse, psnr (mean of per-frame dB), ssim and
    lpips (NaN without an LPIPS model).
    """
    import torch

    from rla_pipeline.evaluation import image_metrics as im

    picks = _eval_frames(ds, max_frames)
    dev = next(model.parameters()).device
    sums: dict[str, dict[str, list]] = {k: {"mse": [], "psnr": [], "ssim": [], "lpips": []} for k in ("decoder", "mean_image")}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(picks), batch_size):
            items = [ds[int(j)] for j in picks[i : i + batch_size]]
            tokens = torch.stack([it["tokens"] for it in items]).to(dev)
            truth = torch.stack([it["image"] for it in items])  # (b, 3, S, S)
            decoded = model(tokens).clamp(0, 1).cpu()
            baseline = model.mean_image.cpu().clamp(0, 1).expand_as(truth)
            for name, pred in (("decoder", decoded), ("mean_image", baseline)):
                sums[name]["mse"].append(im.mse(pred, truth))
                sums[name]["psnr"].append(im.psnr(pred, truth))
                sums[name]["ssim"].append(im.ssim(pred, truth))
                if lpips is not None:
                    sums[name]["lpips"].append(lpips(pred, truth))
    out = {}
    for name, lists in sums.items():
        row = {"frames": float(len(picks))}
        for k, parts in lists.items():
            row[k] = float(torch.cat(parts).double().mean()) if parts else float("nan")
        out[name] = row
    return out


def decoded_grid(model, ds: TokenFrameDataset, columns: int):
    """Matplotlib figure: true frames (top row) above the decoded ones (bottom), ``columns`` frames evenly spread
    over ``ds`` (so over its episodes), each titled with the episode and frame, PSNR/SSIM under the decoded one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from rla_pipeline.evaluation import image_metrics as im

    picks = _eval_frames(ds, columns)
    items = [ds[int(j)] for j in picks]
    truth = torch.stack([it["image"] for it in items])
    with torch.no_grad():
        decoded = model(torch.stack([it["tokens"] for it in items]).to(next(model.parameters()).device)).clamp(0, 1).cpu()
    p, s = im.psnr(decoded, truth), im.ssim(decoded, truth)
    n = len(items)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.6, 3.6), squeeze=False)
    for c, it in enumerate(items):
        for r, img in enumerate((truth[c], decoded[c])):
            ax = axes[r][c]
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][c].set_title(f"{it['episode_id'][-16:]}\nt={int(it['t'])}", fontsize=6)
        axes[1][c].set_xlabel(f"{float(p[c]):.1f} dB / {float(s[c]):.2f}", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=9)
    axes[1][0].set_ylabel("decoded", fontsize=9)
    fig.suptitle("DINO-to-RGB decoder on held-out episodes (PSNR / SSIM per frame)", fontsize=9)
    fig.tight_layout()
    return fig


def evaluate_pixel_decoder(model, feature_cache, episode_store, splits: pd.DataFrame, params: dict):
    """-> (pixel_decoder_metrics table, PNG grid figure (true vs decoded on val episodes)).

    Table: one row per (split, method) for split in val / heldout_task (when it has episodes) and method in
    decoder / mean_image (the training set's mean frame, the baseline): frames, mse, psnr, ssim, lpips,
    lpips_status ("available" or why not: LPIPS is NaN then, never a stand-in).
    """
    from rla_pipeline import tracking
    from rla_pipeline.evaluation.image_metrics import load_lpips

    p = PixelDecoderStageConfig.from_dict(params)
    e = p.eval
    lpips, lpips_status = load_lpips(e.lpips_backbone_weights, e.lpips_linear_weights)
    size = model.config.image_size
    rows, metrics, grid = [], {}, None
    for split in ("val", "heldout_task"):
        ids = episode_ids(splits, split)
        if not ids:
            continue
        ds = TokenFrameDataset(feature_cache, episode_store, ids, size, p.mask_background, frame_stride=e.stride)
        quality = reconstruction_quality(model, ds, e.max_frames, e.batch_size, lpips)
        for method, q in quality.items():
            rows.append({"split": split, "method": method, "episodes": len(ids), **q, "lpips_status": lpips_status})
            metrics.update({f"pixel_decoder.{split}.{method}.{k}": v for k, v in q.items()
                            if k != "frames" and np.isfinite(v)})
        if grid is None:
            grid = decoded_grid(model, ds, e.grid_frames)
    if grid is None:
        raise ValueError("pixel_decoder: no val or heldout_task episodes to evaluate on (split.val_fraction is 0?)")
    table = pd.DataFrame(rows, columns=["split", "method", "episodes", "frames", "mse", "psnr", "ssim", "lpips",
                                        "lpips_status"])
    tracking.log_metrics(metrics)
    logger.info("pixel decoder reconstruction quality:\n%s", table.to_string(index=False))
    return table, grid
