"""The training loop of one process (one DDP rank, or the only process): resume, step, log, validate, checkpoint.

Per step (``step`` counts optimizer updates, 1-based in logs):
  batch -> autocast forward ``loss_fn`` (through DDP when distributed) -> NaN check -> backward -> unscale (fp16)
  -> clip -> AdamW step -> LR schedule step.
Every ``log_every``: a train row (window means) in the history + MLflow; every ``val_every`` (and at the end):
validation + callbacks on rank 0, broadcast to all ranks; every ``checkpoint_every`` (and at the end): an atomic
checkpoint written by rank 0. :func:`train_in_process` is what both launch paths of ``trainer.train`` run.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from rla_pipeline import tracking
from rla_pipeline.training import checkpoint as ckpt
from rla_pipeline.training import distributed as ddp
from rla_pipeline.training import mlflow_logging
from rla_pipeline.training.batches import DeviceBatches, floats, mean_loss_metrics, move_to
from rla_pipeline.training.config import NonFiniteLossError, TrainerConfig, TrainResult
from rla_pipeline.training.optim import amp_dtype, make_optimizer
from rla_pipeline.training.resume import config_hash as compute_config_hash
from rla_pipeline.training.resume import find_resumable, finished_result
from rla_pipeline.training.sampling import EpochKeyedDataset, GlobalBatchSampler
from rla_pipeline.training.schedules import make_lr_lambda
from rla_pipeline.utils.progress import Progress
from rla_pipeline.utils.seeding import resolve_device, seed_everything

logger = logging.getLogger(__name__)


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: DDP wraps this, so loss functions that call
    ``model.encode``/``model.decode`` directly still go through DDP's forward (gradient sync)."""

    def __init__(self, model: nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def train_in_process(model, loss_fn, train_dataset, val_dataset, config: TrainerConfig, val_fn, callbacks,
                     ctx: ddp.DistContext, log_to_mlflow: bool) -> TrainResult:
    """Join the process group (when distributed), pick the checkpoint to resume, train, log to MLflow (rank 0)."""
    device = resolve_device(config.device)
    if ctx.is_distributed and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    created_group = ddp.init_process_group(ctx, device)
    try:
        config_hash = compute_config_hash(config, model, loss_fn, train_dataset)
        # Rank 0 decides about the checkpoint (it may move a stale one aside); the others follow its choice.
        choice = find_resumable(config, config_hash) if ctx.is_main else None
        resume_path = ddp.broadcast_object(str(choice[0]) if choice else None, ctx)
        state = None
        if resume_path is not None:
            state = choice[1] if ctx.is_main else ckpt.read_checkpoint(resume_path)
            if state.get("complete"):
                return finished_result(model, state, Path(resume_path))
        mlflow_on = log_to_mlflow and ctx.is_main and tracking.active()
        run_ctx = tracking.child_run(config.run_name) if mlflow_on else contextlib.nullcontext()
        with run_ctx:
            if mlflow_on:
                mlflow_logging.log_params(config, model, config_hash, ctx.world_size)
            result = _loop(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks, ctx, device,
                           config_hash, state, mlflow_on)
            if mlflow_on:
                mlflow_logging.log_weights(result.model)
            return result
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _effective_batch_size(config: TrainerConfig, num_samples: int, world_size: int) -> int:
    """``config.batch_size``, shrunk (with a warning) to a multiple of the world size when the data is smaller."""
    if num_samples >= config.batch_size:
        return config.batch_size
    smaller = (num_samples // world_size) * world_size
    if smaller < 1:
        raise ValueError(f"run {config.run_name!r}: {num_samples} training samples for {world_size} processes")
    logger.warning("run %r: only %d training samples < batch_size %d; using batches of %d",
                   config.run_name, num_samples, config.batch_size, smaller)
    return smaller


def _validate_and_callback(step: int, model, loss_fn, val_loader, val_fn, callbacks, autocast, device,
                           ctx: ddp.DistContext) -> dict[str, float]:
    """Rank 0 validates and runs the callbacks; the metrics (or the error) reach every rank."""
    metrics, error = {}, None
    if ctx.is_main:
        try:
            if val_loader is not None:
                model.eval()
                with torch.no_grad():
                    batches = DeviceBatches(val_loader, device)
                    if val_fn is not None:
                        with autocast():
                            metrics = floats(val_fn(model, batches))
                    else:
                        metrics = mean_loss_metrics(model, loss_fn, batches, autocast)
                model.train()
            for cb in callbacks:
                cb(step, dict(metrics))
        except BaseException as err:  # noqa: BLE001 - re-raised below on every rank
            error = ddp.picklable_error(err) if ctx.is_distributed else err
    metrics, error = ddp.broadcast_object((metrics, error), ctx)
    if error is not None:
        raise ddp.mark_raised_on_all_ranks(error)
    return metrics


def _mean_over_ranks(loss: torch.Tensor, step_metrics: dict[str, float], ctx: ddp.DistContext,
                     device: torch.device) -> tuple[float, dict[str, float]]:
    """The loss and metrics averaged over the ranks, so a NaN loss on any rank reaches every rank."""
    if not ctx.is_distributed:
        return float(loss.detach()), step_metrics
    names = sorted(step_metrics)
    packed = torch.tensor([float(loss.detach())] + [step_metrics[k] for k in names], dtype=torch.float64,
                          device=device)
    torch.distributed.all_reduce(packed)
    packed = (packed / ctx.world_size).tolist()
    return packed[0], dict(zip(names, packed[1:]))


def _loop(model, loss_fn, train_dataset, val_dataset, config: TrainerConfig, val_fn, callbacks,
          ctx: ddp.DistContext, device: torch.device, config_hash: str, state: dict | None,
          mlflow_on: bool) -> TrainResult:
    seed_everything(config.seed + ctx.rank)
    num_samples = len(train_dataset)
    batch_size = _effective_batch_size(config, num_samples, ctx.world_size)

    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_lr_lambda(config.warmup_steps, config.max_steps, config.schedule))
    dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def autocast():
        return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    history: list[dict[str, Any]] = []
    accum: dict[str, float] = {}
    accum_n = 0
    final_val: dict[str, float] = {}
    start_step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        ckpt.restore_rng(rng[ctx.rank] if ctx.rank < len(rng) else rng[0])
        history = list(state["history"])
        accum, accum_n = dict(state["accum"]["sums"]), int(state["accum"]["n"])
        final_val = dict(state.get("final_val") or {})
        start_step = int(state["step"])
        logger.info("run %r: resuming from step %d of %d", config.run_name, start_step, config.max_steps)
        if mlflow_on:
            # the exact run this training continues: the checkpoint names the MLflow run that wrote it
            tracking.set_tags({"trainer.resumed_from_step": start_step,
                               **({"resumed_from_run_id": state["mlflow_run_id"]} if state.get("mlflow_run_id") else {})})
            for row in history:
                mlflow_logging.log_history_row(row)

    sampler = GlobalBatchSampler(num_samples, batch_size, config.seed, ctx.rank, ctx.world_size, start_step)
    loader = DataLoader(
        EpochKeyedDataset(train_dataset), batch_sampler=sampler, num_workers=config.num_workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=False,
    )
    val_loader = None
    if val_dataset is not None and len(val_dataset) > 0:
        val_loader = DataLoader(val_dataset, batch_size=max(1, batch_size // ctx.world_size), shuffle=False,
                                num_workers=config.num_workers, pin_memory=device.type == "cuda")

    wrapped = _LossModule(model, loss_fn)
    if ctx.is_distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # models whose loss skips a head (e.g. an optional latent head)
        )
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = config.grad_clip if config.grad_clip is not None else float("inf")

    # a tqdm bar on a terminal, rate-limited log lines otherwise (utils/progress.py; RLA_PROGRESS=0 silences)
    bar = Progress(config.max_steps, config.run_name, unit="step", initial=start_step,
                   enabled=config.progress and ctx.is_main)
    it = iter(loader)
    t_window = time.perf_counter()
    try:
        for step in range(start_step + 1, config.max_steps + 1):
            batch = move_to(next(it), device)
            with autocast():
                loss, metrics = wrapped(batch)
            loss_value, step_metrics = _mean_over_ranks(loss, floats(metrics), ctx, device)
            if not math.isfinite(loss_value):
                raise ddp.mark_raised_on_all_ranks(NonFiniteLossError(
                    f"run {config.run_name!r}: loss is {loss_value} at step {step} (batch of epoch "
                    f"{sampler.position(step - 1)[0]}); lower lr, check the inputs, or use amp='off'"))
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if not math.isfinite(grad_norm) and not scaler.is_enabled():
                raise ddp.mark_raised_on_all_ranks(NonFiniteLossError(
                    f"run {config.run_name!r}: gradient norm is {grad_norm} at step {step} (loss {loss_value:.4g})"))
            lr_used = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            row = {"loss": loss_value, **step_metrics, "grad_norm": grad_norm}
            for k, v in row.items():
                accum[k] = accum.get(k, 0.0) + v
            accum_n += 1
            if step % config.log_every == 0 or step == config.max_steps:
                train_row = {"step": step, "split": "train", **{k: v / accum_n for k, v in accum.items()},
                             "lr": lr_used}
                history.append(train_row)
                elapsed = time.perf_counter() - t_window
                if mlflow_on:
                    mlflow_logging.log_history_row(train_row)
                    tracking.log_metrics({"train/steps_per_s": accum_n / max(elapsed, 1e-9)}, step=step)
                bar.set_postfix(loss=f"{train_row['loss']:.4g}", lr=f"{lr_used:.2e}")
                accum, accum_n, t_window = {}, 0, time.perf_counter()
            if step % config.val_every == 0 or step == config.max_steps:
                val_metrics = _validate_and_callback(step, model, loss_fn, val_loader, val_fn, callbacks, autocast,
                                                     device, ctx)
                if val_metrics:
                    final_val = val_metrics
                    val_row = {"step": step, "split": "val", **val_metrics}
                    history.append(val_row)
                    if mlflow_on:
                        mlflow_logging.log_history_row(val_row)
                    bar.set_postfix(loss=f"{row['loss']:.4g}", val_loss=f"{val_metrics.get('loss', float('nan')):.4g}")
            if config.checkpoint_dir and (step % config.checkpoint_every == 0 or step == config.max_steps):
                rng_states = ddp.gather_objects(ckpt.capture_rng(), ctx)
                if ctx.is_main:
                    epoch, b = sampler.position(step)
                    ckpt.save_checkpoint(config.checkpoint_dir, {
                        "config_hash": config_hash,
                        "run_name": config.run_name,
                        "step": step,
                        "complete": step == config.max_steps,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "rng": rng_states,
                        "sampler": {"epoch": epoch, "batch_in_epoch": b, "seed": config.seed,
                                    "num_samples": num_samples, "batch_size": batch_size},
                        "accum": {"sums": dict(accum), "n": accum_n},
                        "history": history,
                        "final_val": final_val,
                        "saved_at": time.time(),
                        "mlflow_run_id": tracking.active_run_id() or "",  # a resumed run links to this one
                    })
            bar.update(1)  # after this step's postfix, validation and checkpoint: a log line shows all of them
    finally:
        bar.close()
        del it  # stops DataLoader workers

    return TrainResult(model=model.cpu().eval(), history=pd.DataFrame(history), final_val=final_val,
                       resumed_from_step=start_step if state is not None else None)
