"""World-model predictions as images: decoded rollouts scored against the true frames, and pictured side by side.

The world-model table (``stages.world_model.evaluate_world_models``) scores predictions in DINO token space. Here
the same rollouts are decoded to RGB by the DINO-to-RGB decoder (the paper's stage 1) and compared with the true
frames (SSIM, PSNR; LPIPS only with local weights), which is how the paper reports world models:

- Same rollouts: the same validation episodes (interleaved by task), horizons, chunk, stride, pairs, per-robot
  grouping and rollout seed as the token table (``metrics.rollout_batch`` + ``metrics.rollout_l1``), so a decoded
  row is the decoded version of the token row beside it. Same bootstrap: episode-level resamples drawn by
  ``metrics.episode_draws`` with the table's seed and ``n_boot``.
- Controls, decoded alike: ``copy`` (decode s_t: the token table's copy baseline), and the decoder's ceiling
  ``decoded_truth`` (decode the TRUE s_{t+h}: what a perfect world model would score through this decoder, so the
  gap between it and 1.0 SSIM is the decoder's, the gap between a model and it the world model's). ``copy_frame``
  (the true frame t, no decoder) shows how much the scene moves over h in pixels.
- Pictures: a few validation episodes from frame 0, ground truth, decoded truth, RLA-WM and each baseline at each
  horizon (5 / 15 / 30 frames at the default), per-frame SSIM under each prediction.

No Kedro here (the node is in ``pipelines/pixel_decoder``); torch is imported inside the functions.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack

import numpy as np
import pandas as pd

from rla_pipeline.stages.common import action_episode_ids, episode_ids
from rla_pipeline.stages.pixel_decoder import PixelDecoderStageConfig, TokenFrameDataset

logger = logging.getLogger(__name__)

# row names beside the world models' (stages.world_model.NAMES), in table / picture order
CONTROLS = {"decoded_truth": "decoded truth (decoder ceiling)", "copy": "copy s_t (decoded)",
            "copy_frame": "copy frame t (true pixels, no decoder)"}
METRICS = ("ssim", "psnr", "lpips")
TABLE_COLUMNS = ["robot", "model", "name", "horizon", "pairs", "episodes",
                 *[c for m in METRICS for c in (m, f"{m}_ci_low", f"{m}_ci_high", f"ref_minus_{m}",
                                                 f"ref_minus_{m}_ci_low", f"ref_minus_{m}_ci_high")],
                 "lpips_status"]


def _world_models(world_model, deterministic, deterministic_residual, absolute_flow) -> dict:
    models = {"rla_wm": world_model, "deterministic": deterministic,
              "deterministic_residual": deterministic_residual, "absolute_flow": absolute_flow}
    return {k: v for k, v in models.items() if v is not None}


def _robot_groups(models: dict, episode_index: pd.DataFrame, val_ids: list[str]) -> list[tuple[str | None, list[str]]]:
    """(robot, its val episodes) as the token table groups them (``stages.robots.per_robot_table``): one group of
    every episode for a one-robot model, else one per robot of the models that has val episodes."""
    from rla_pipeline.stages.robots import robot_of

    robots = list(getattr(next(iter(models.values())), "robots", []))
    if len(robots) <= 1:
        return [(robots[0] if robots else None, val_ids)]
    of = robot_of(episode_index)
    return [(r, ids) for r in robots if (ids := [e for e in val_ids if of[e] == r])]


def _score(pred, truth, psnr_max_db: float, lpips) -> dict[str, np.ndarray]:
    """Per-image SSIM / PSNR / LPIPS (NaN without an LPIPS model) of float (B, 3, S, S) images."""
    from rla_pipeline.evaluation import image_metrics as im

    out = {"ssim": im.ssim(pred, truth).numpy(), "psnr": im.psnr(pred, truth, max_db=psnr_max_db).numpy()}
    out["lpips"] = lpips(pred, truth).numpy() if lpips is not None else np.full(len(out["ssim"]), np.nan)
    return out


def _decode(decoder, tokens, batch_size: int):
    """Raw-scale tokens (B, N, D) -> float images (B, 3, S, S) in [0, 1], through the uint8 frames a viewer sees."""
    from rla_pipeline.evaluation.image_metrics import hwc_to_images
    from rla_pipeline.models.pixel_decoder import decode_tokens

    return hwc_to_images(decode_tokens(decoder, tokens, batch_size=batch_size))


def decoded_pair_scores(decoder, models: dict, feature_cache, frames: TokenFrameDataset, episode_ids_: list[str],
                        horizon: int, chunk: int, max_actions: int, stride: int, max_pairs: int | None, seed: int,
                        batch_size: int = 64, psnr_max_db: float = 60.0, lpips=None) -> pd.DataFrame | None:
    """Per-pair image scores of every world model and control at one horizon (None: no episode long enough).

    The pairs and rollouts are the token table's (``rollout_batch`` over ``episode_ids_`` in their order, then
    ``rollout_l1`` with ``seed``). -> one row per (pair, method): episode_id, t, method, ssim, psnr, lpips.
    """
    import torch

    from rla_pipeline.evaluation.metrics import rollout_batch, rollout_l1

    batch = rollout_batch(feature_cache, episode_ids_, horizon, chunk, max_actions, stride, max_pairs)
    if batch is None:
        return None
    eids, ts = batch.pairs["episode_id"].tolist(), batch.pairs["t"].to_numpy()
    # true frames t + h and t, resized like the decoder's training targets (uint8 -> [0, 1])
    truth = torch.stack([frames.images[e][t + horizon] for e, t in zip(eids, ts)]).float() / 255.0
    start = torch.stack([frames.images[e][t] for e, t in zip(eids, ts)]).float() / 255.0
    preds = {"decoded_truth": _decode(decoder, batch.target, batch_size),
             "copy": _decode(decoder, batch.s_0, batch_size),
             "copy_frame": start}
    for name, model in models.items():
        model.eval()
        _, tokens = rollout_l1(model, batch, seed=seed)  # the token table's call: same generator, same samples
        preds[name] = _decode(decoder, tokens, batch_size)
    parts = []
    for method, images in preds.items():
        s = _score(images, truth, psnr_max_db, lpips)
        parts.append(pd.DataFrame({"episode_id": eids, "t": ts, "method": method, **s}))
    return pd.concat(parts, ignore_index=True)


def decoded_table(scores: pd.DataFrame, names: dict[str, str], n_boot: int, seed: int, reference: str = "rla_wm",
                  lpips_status: str = "") -> pd.DataFrame:
    """Per-pair scores of one robot group and horizon (``decoded_pair_scores``) -> one row per method with means
    and episode-bootstrap 95% intervals; ``ref_minus_*``: ``reference``'s mean minus the row's (SSIM / PSNR: < 0
    means the row's method is better than the reference; LPIPS: > 0)."""
    from rla_pipeline.evaluation.metrics import episode_bootstrap_means

    methods = list(dict.fromkeys(scores["method"]))
    by = {m: scores[scores["method"] == m] for m in methods}  # each in the same pair order (decoded_pair_scores)
    first = by[methods[0]]
    rows = {m: {"model": m, "name": names.get(m, m)} for m in methods}
    for metric in METRICS:
        # one column per method, pairs in the token table's order (its bootstrap draws follow that episode order)
        wide = first[["episode_id"]].assign(**{m: by[m][metric].to_numpy() for m in methods})
        ci = episode_bootstrap_means(wide, methods, reference if reference in methods else None, n_boot, seed)
        for m in methods:
            c = ci[m]
            rows[m].update({metric: c["mean"], f"{metric}_ci_low": c["ci_low"], f"{metric}_ci_high": c["ci_high"],
                            f"ref_minus_{metric}": c.get("ref_minus", np.nan),
                            f"ref_minus_{metric}_ci_low": c.get("ref_minus_ci_low", np.nan),
                            f"ref_minus_{metric}_ci_high": c.get("ref_minus_ci_high", np.nan)})
    for m in methods:
        rows[m].update({"pairs": len(first), "episodes": int(first["episode_id"].nunique()),
                        "lpips_status": lpips_status})
    return pd.DataFrame(list(rows.values()))


def rollout_pictures(decoder, models: dict, names: dict[str, str], feature_cache, frames: TokenFrameDataset,
                     pic_ids: list[str], horizons: list[int], chunk: int, max_actions: int, seed: int,
                     robot: str | None = None, title: str = ""):
    """Matplotlib figure: for each pictured episode, the true frame 0 then, per horizon h, the frame h of the
    ground truth, the decoded truth and every model's rollout from frame 0 (rows), per-frame SSIM under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from rla_pipeline.evaluation import image_metrics as im
    from rla_pipeline.evaluation.metrics import rollout_batch

    rows = ["truth", "decoded_truth", *models]
    labels = {**names, "truth": "ground truth", "decoded_truth": "decoded truth"}  # short row labels
    cells: dict[tuple[str, str, int], tuple[np.ndarray, float | None]] = {}  # (row, episode, h) -> (HWC, ssim)
    shown: list[int] = []
    for h in horizons:
        b = rollout_batch(feature_cache, pic_ids, h, chunk, max_actions, stride=10**9)  # t = 0 of each episode
        if b is None:
            continue
        shown.append(h)
        eids = b.pairs["episode_id"].tolist()
        truth = torch.stack([frames.images[e][h] for e in eids]).float() / 255.0
        imgs = {"truth": truth, "decoded_truth": _decode(decoder, b.target, 64)}
        for name, m in models.items():
            m.eval()
            with torch.no_grad():
                pred = m.rollout(b.s_0, b.chunks, b.masks, generator=torch.Generator().manual_seed(seed),
                                 robot=robot)[-1]
            imgs[name] = _decode(decoder, pred, 64)
        for r, x in imgs.items():
            s = im.ssim(x, truth).numpy() if r != "truth" else [None] * len(eids)
            for i, e in enumerate(eids):
                cells[(r, e, h)] = (x[i].permute(1, 2, 0).numpy(), s[i])
    eps = [e for e in pic_ids if any((("truth", e, h) in cells) for h in shown)]
    cols = [(e, h) for e in eps for h in [0, *shown]]
    fig, axes = plt.subplots(len(rows), max(len(cols), 1), figsize=(1.15 * max(len(cols), 1) + 0.8,
                                                                    1.25 * len(rows) + 0.6), squeeze=False)
    for c, (e, h) in enumerate(cols):
        for r, row in enumerate(rows):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if h == 0:  # the start frame: every rollout begins from it, shown once in the truth row
                if row == "truth":
                    ax.imshow(frames.images[e][0].permute(1, 2, 0).numpy())
                else:
                    ax.axis("off")
            elif (row, e, h) in cells:
                img, s = cells[(row, e, h)]
                ax.imshow(np.clip(img, 0, 1))
                if s is not None:
                    ax.set_xlabel(f"SSIM {float(s):.2f}", fontsize=6)
            if r == 0:
                ax.set_title((f"{e[-14:]}\nstart" if h == 0 else f"+{h} frames"), fontsize=6)
    label_col = 1 if len(cols) > 1 else 0  # column 0 is the start frame: blank (axis off) below the truth row
    for r, row in enumerate(rows):
        axes[r][label_col].set_ylabel(labels.get(row, row).replace(" (", "\n("), fontsize=6)  # long names wrap
    fig.suptitle(title or "Imagined rollouts from frame 0, decoded to RGB (held-out episodes)", fontsize=9)
    fig.tight_layout()
    return fig


def evaluate_decoded_world_models(pixel_decoder_model, world_model, wm_baseline_deterministic,
                                  wm_baseline_deterministic_residual, wm_baseline_absolute_flow, feature_cache,
                                  episode_store, episode_splits: pd.DataFrame, episode_index: pd.DataFrame,
                                  pixel_decoder_splits: pd.DataFrame, world_model_params: dict,
                                  pixel_decoder_params: dict, seed: int):
    """-> (wm_decoded_table, wm_decoded_rollouts figure): decoded world-model predictions against the true frames.

    Table: one row per (robot group, horizon, method) for method in the world models, ``decoded_truth`` (decoder
    ceiling), ``copy`` (decoded s_t) and ``copy_frame``: pairs, episodes, ssim / psnr / lpips with episode-bootstrap
    95% intervals (``*_ci_low/high``) and RLA-WM's mean minus the row's (``ref_minus_*`` with intervals),
    lpips_status (why LPIPS is NaN when it is). See the module docstring for what is shared with the token table.
    """
    from rla_pipeline import tracking
    from rla_pipeline.evaluation.image_metrics import load_lpips
    from rla_pipeline.stages.robots import pictures_robot
    from rla_pipeline.stages.world_model import NAMES, WorldModelStageConfig, conditioned_cache, interleave_by_task

    wp = WorldModelStageConfig.from_dict(world_model_params).eval
    p = PixelDecoderStageConfig.from_dict(pixel_decoder_params)
    dec = p.world_models
    models = _world_models(world_model, wm_baseline_deterministic, wm_baseline_deterministic_residual,
                           wm_baseline_absolute_flow)
    names = {**NAMES, **CONTROLS}
    frames_cache = feature_cache  # tokens and frames; rollouts read the conditioning signal the models were trained on
    feature_cache = conditioned_cache(models, feature_cache)
    val_ids = interleave_by_task(action_episode_ids(feature_cache, episode_splits, "val"), episode_index)
    if not val_ids:
        raise ValueError("decoded world-model evaluation: no val episodes with actions in episode_splits")
    seen = sorted(set(val_ids) & set(episode_ids(pixel_decoder_splits, "train")))
    if seen:  # the decoder's split differs from the world models' (pixel_decoder.split != rla.split)
        logger.warning("decoded world-model evaluation: the pixel decoder was trained on %d of the %d val episodes "
                       "(%s...): its ceiling there is optimistic; keep pixel_decoder.split equal to rla.split",
                       len(seen), len(val_ids), seen[:3])
    lpips, lpips_status = load_lpips(p.eval.lpips_backbone_weights, p.eval.lpips_linear_weights)
    decoder = pixel_decoder_model.eval()
    frames = TokenFrameDataset(frames_cache, episode_store, val_ids, decoder.config.image_size, p.mask_background)
    max_actions = world_model.config.max_actions
    max_pairs = dec.max_pairs if dec.max_pairs is not None else wp.max_pairs
    parts = []
    groups = _robot_groups(models, episode_index, val_ids)
    for robot, ids in groups:
        with ExitStack() as stack:
            if len(groups) > 1:  # as the token table: a multi-robot model's rollouts run inside for_robot
                for m in models.values():
                    stack.enter_context(m.for_robot(robot))
            for h in wp.horizons:
                scores = decoded_pair_scores(decoder, models, feature_cache, frames, ids, h, wp.chunk, max_actions,
                                             wp.stride, max_pairs, seed, dec.batch_size, dec.psnr_max_db, lpips)
                if scores is None:
                    continue
                t = decoded_table(scores, names, wp.n_boot, seed, "rla_wm", lpips_status)
                parts.append(t.assign(robot=robot or "all", horizon=int(h)))
    if not parts:
        raise ValueError(f"decoded world-model evaluation: no val episode is longer than a horizon of {wp.horizons}")
    table = pd.concat(parts, ignore_index=True)[TABLE_COLUMNS]
    tracking.log_metrics({f"wm_decoded.{r.model}.h{r.horizon}.{m}" + (f".{r.robot}" if len(groups) > 1 else ""):
                          getattr(r, m) for r in table.itertuples() for m in ("ssim", "psnr")})
    logger.info("decoded world-model predictions (SSIM / PSNR vs true frames):\n%s",
                table[["robot", "model", "horizon", "pairs", "ssim", "ssim_ci_low", "ssim_ci_high", "psnr"]]
                .to_string(index=False))

    robot, pic_ids = pictures_robot(models, episode_index, val_ids)
    longest = max(wp.horizons)
    pic_ids = [i for i in pic_ids if feature_cache.tokens(i).shape[0] > longest][: wp.pictures] or \
        [i for i in pic_ids][: wp.pictures]
    figure = rollout_pictures(decoder, models, names, feature_cache, frames, pic_ids, list(wp.horizons), wp.chunk,
                              max_actions, seed, robot)
    return table, figure
