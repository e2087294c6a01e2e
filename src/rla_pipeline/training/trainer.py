"""The one training loop every model in the project goes through.

```python
result = train(model, loss_fn, train_dataset, val_dataset, TrainerConfig(run_name="rla", max_steps=2000, batch_size=64))
# loss_fn(model, batch) -> (loss: scalar Tensor, metrics: dict[str, float | Tensor])
# val_fn(model, val_batches) -> dict[str, float]     (default: batch-size-weighted mean of loss_fn's metrics)
# callbacks: callable(step: int, val_metrics: dict) -> None, called after every validation (may raise)
```
What it does, step by step (``step`` counts optimizer updates, 1-based in logs):
  batch (global ``batch_size``, split evenly over the DDP ranks) -> autocast forward ``loss_fn`` -> NaN check
  -> backward -> unscale (fp16) -> clip -> AdamW step -> LR schedule step.
  Every ``log_every``: a train row (window means) in the history + MLflow; every ``val_every`` (and at the end):
  validation + callbacks; every ``checkpoint_every`` (and at the end): an atomic checkpoint.

Data order: an infinite sampler whose order for epoch ``e`` is ``randperm(N)`` seeded from ``(seed, e)``; the
position is a pure function of the step (``batches_per_epoch = N // batch_size``; the tail of each epoch is
dropped), so a resumed run sees exactly the batches an uninterrupted run would. Datasets with
``set_epoch(epoch)`` get it called (inside DataLoader workers too) before items of a new epoch are read.

Resume and re-runs are described in ``docs/training.md``; DDP plumbing is in ``training/distributed.py``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from rla_pipeline import tracking
from rla_pipeline.training import checkpoint as ckpt
from rla_pipeline.training import distributed as ddp
from rla_pipeline.training.schedules import SCHEDULES, make_lr_lambda
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.seeding import resolve_device, seed_everything

logger = logging.getLogger(__name__)

AMP_MODES = ("auto", "off", "bf16", "fp16")
# Fields of TrainerConfig that change the numbers a run produces; the others (names, paths, logging and
# checkpoint cadence, workers, device, process count) may change between a run and its resume.
HASHED_FIELDS = ("max_steps", "batch_size", "lr", "weight_decay", "betas", "warmup_steps", "schedule",
                 "grad_clip", "amp", "seed")
_ALL_RANKS = "_rla_raised_on_all_ranks"


@dataclass
class TrainerConfig:
    """How to train; one block per model under its pipeline's parameters (e.g. ``rla.trainer``)."""

    run_name: str  # MLflow child-run name and progress-bar label
    max_steps: int  # optimizer updates in total
    batch_size: int  # GLOBAL batch (split over DDP processes, so results do not depend on the device count)
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # decoupled weight decay, applied to weights with ndim >= 2 only (not biases/norms)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warmup updates
    schedule: str = "cosine"  # "cosine" (to 0 at max_steps) | "constant" (after warmup)
    grad_clip: float | None = 1.0  # max global grad norm; None = no clipping
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU) | "off" | "bf16" | "fp16" (with GradScaler)
    log_every: int = 10  # train-metric rows (window means) in the history and MLflow
    val_every: int = 100  # validation + callbacks (also at the last step)
    checkpoint_every: int = 100  # checkpoint cadence (also at the last step); needs checkpoint_dir
    checkpoint_dir: str | None = None  # None = no checkpoints, no resume
    seed: int = 0  # seeds RNGs and the data order
    num_workers: int = 0  # DataLoader worker processes
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" (DDP ranks use cuda:LOCAL_RANK)
    num_processes: int = 1  # > 1: DDP workers launched here (ignored under torchrun, which sets the world)
    progress: bool = True  # tqdm progress bar (rank 0)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas must be two numbers in [0, 1)"),
            (0 <= self.warmup_steps <= self.max_steps, "warmup_steps must be in [0, max_steps]"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0 or None"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}"),
            (min(self.log_every, self.val_every, self.checkpoint_every) >= 1, "*_every must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.num_processes >= 1, "num_processes must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainerConfig({self.run_name!r}): {message}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerConfig":
        return from_dict(cls, data, where="TrainerConfig")


@dataclass
class TrainResult:
    """``model``: the trained model (unwrapped, CPU, eval mode; the same object that was passed in).
    ``history``: one row per log/validation event: ``step``, ``split`` ("train"|"val"), then the metrics.
    ``final_val``: metrics of the last validation ({} without a val set).
    ``resumed_from_step``: the checkpoint step this call started from (``max_steps`` when the checkpoint
    was already complete and nothing was trained), None for a fresh run."""

    model: nn.Module
    history: pd.DataFrame
    final_val: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int | None = None


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the message names the run and the step."""


class CheckpointMismatchWarning(UserWarning):
    """A checkpoint of another config/model was found and set aside; training started fresh."""


# ------------------------------------------------------------------------------------------------ sampling
def epoch_order(seed: int, epoch: int, num_samples: int) -> torch.Tensor:
    """The global sample order of ``epoch``: a permutation of ``range(num_samples)``, a pure function of its inputs."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(mixed))


class GlobalBatchSampler:
    """Infinite batch sampler for one rank: step ``s`` gives rank ``r`` its slice of the global batch ``s``.

    Yields lists of ``(epoch, index)`` keys (see :class:`EpochKeyedDataset`). Every rank walks the same global
    order; rank ``r`` takes ``order[b*B + r*B/W : b*B + (r+1)*B/W]`` for batch ``b`` of the epoch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0) -> None:
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by {world_size} processes")
        if num_samples < batch_size:
            raise ValueError(f"{num_samples} samples < batch_size {batch_size}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.per_rank = batch_size // world_size
        self.batches_per_epoch = num_samples // batch_size

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, batch_in_epoch)`` of the batch that update ``step`` (0-based) trains on."""
        return divmod(step, self.batches_per_epoch)

    def __iter__(self):
        step, cached_epoch, order = self.start_step, None, None
        while True:
            epoch, b = self.position(step)
            if epoch != cached_epoch:
                order, cached_epoch = epoch_order(self.seed, epoch, self.num_samples), epoch
            start = b * self.batch_size + self.rank * self.per_rank
            yield [(epoch, int(i)) for i in order[start : start + self.per_rank]]
            step += 1


class EpochKeyedDataset(Dataset):
    """Reads ``dataset[index]`` for keys ``(epoch, index)``, calling ``dataset.set_epoch(epoch)`` on a new epoch.

    Living inside the DataLoader (also in its worker processes), it keeps ``set_epoch`` in step with the data.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._epoch: int | None = None
        self._has_set_epoch = callable(getattr(dataset, "set_epoch", None))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if self._has_set_epoch and epoch != self._epoch:
            self.dataset.set_epoch(epoch)
            self._epoch = epoch
        return self.dataset[index]


# ------------------------------------------------------------------------------------------------- helpers
class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: DDP wraps this, so loss functions that call
    ``model.encode``/``model.decode`` directly still go through DDP's forward (gradient sync)."""

    def __init__(self, model: nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts/lists/tuples moved to ``device``; other values untouched."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for v in batch:
            n = _batch_len(v)
            if n:
                return n
    return 0


class _DeviceBatches:
    """Iterable over ``loader`` yielding batches already on ``device`` (what ``val_fn`` receives)."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self):
        for batch in self.loader:
            yield move_to(batch, self.device)

    def __len__(self) -> int:
        return len(self.loader)


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in (metrics or {}).items()}


def mean_loss_metrics(model: nn.Module, loss_fn: Callable, batches: Iterable, autocast) -> dict[str, float]:
    """Default validation: ``loss`` and ``loss_fn``'s metrics, averaged over the val set weighted by batch size."""
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        n = max(1, _batch_len(batch))
        with autocast():
            loss, metrics = loss_fn(model, batch)
        row = {"loss": float(loss.detach().float()), **_floats(metrics)}
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    return {k: v / count for k, v in sums.items()} if count else {}


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def dataset_fingerprint(dataset) -> str | None:
    """The dataset's ``fingerprint`` attribute (a digest of its content), or None when it has none.

    It goes into the checkpoint's config hash, so a finished checkpoint is never returned for other data with
    the same number of samples (e.g. features recomputed with other encoder weights).
    """
    fp = getattr(dataset, "fingerprint", None)
    return str(fp() if callable(fp) else fp) if fp is not None else None


def config_fingerprint(config: TrainerConfig, model: nn.Module, loss_fn: Callable, num_samples: int,
                       data_fingerprint: str | None = None) -> dict:
    """Everything a checkpoint must agree with to be resumed (hashed into ``config_hash``)."""
    model_cfg = getattr(model, "config", None)
    # Values the data set before training (token statistics buffers, a frozen RLA inside a world model):
    # other values mean another training, even with identical shapes.
    fixed = list(model.named_buffers()) + [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    buffers = {n: _tensor_digest(t) for n, t in fixed}
    # Not the initial trainable weights: a resumed run restores them from the checkpoint, whatever it built.
    return {
        "data": data_fingerprint,
        "buffers": buffers,
        "trainer": {f: getattr(config, f) for f in HASHED_FIELDS},
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_config": dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else None,
        "parameters": [[n, list(p.shape), str(p.dtype), p.requires_grad] for n, p in model.named_parameters()],
        "loss_fn": f"{getattr(loss_fn, '__module__', '?')}.{getattr(loss_fn, '__qualname__', type(loss_fn).__name__)}",
        "num_samples": num_samples,
    }


def _make_optimizer(model: nn.Module, config: TrainerConfig, device: torch.device) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError(f"run {config.run_name!r}: the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type == "cuda")


def _weights_artifact(model: nn.Module, artifact_path: str = "weights") -> None:
    """Log the model's state dict as ``<artifact_path>/model.safetensors`` to the active MLflow run."""
    if not tracking.active():
        return
    from safetensors.torch import save_file

    from rla_pipeline.datasets.torch_model import model_to_tensors

    tensors, aliases = model_to_tensors(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(tensors, str(path), metadata={"class": type(model).__qualname__, "aliases": str(aliases)})
        tracking.log_artifact(str(path), artifact_path=artifact_path)


def _log_params(config: TrainerConfig, model: nn.Module, config_hash: str, world_size: int) -> None:
    params = {f"trainer.{k}": v for k, v in dataclasses.asdict(config).items()}
    model_cfg = getattr(model, "config", None)
    if dataclasses.is_dataclass(model_cfg):
        params.update({f"model.{k}": v for k, v in dataclasses.asdict(model_cfg).items()})
    params["model.class"] = type(model).__qualname__
    params["model.num_parameters"] = sum(p.numel() for p in model.parameters())
    params["trainer.world_size"] = world_size
    tracking.log_params(params)
    tracking.set_tags({"trainer.config_hash": config_hash})


def _log_history_row(row: dict[str, Any]) -> None:
    split = row["split"]
    tracking.log_metrics({f"{split}/{k}": v for k, v in row.items() if k not in ("step", "split")}, step=row["step"])


def _finished_result(model: nn.Module, state: dict, path: Path) -> TrainResult:
    model.load_state_dict(state["model"])
    logger.info("checkpoint %s is complete (step %d): returning the trained model without training", path, state["step"])
    return TrainResult(model=model.cpu().eval(), history=pd.DataFrame(state["history"]),
                       final_val=dict(state.get("final_val") or {}), resumed_from_step=int(state["step"]))


def _find_resumable(config: TrainerConfig, config_hash: str) -> tuple[Path, dict] | None:
    """The checkpoint to resume from, or None. A checkpoint of another config is moved aside with a warning."""
    if not config.checkpoint_dir:
        return None
    found = ckpt.load_latest(config.checkpoint_dir)
    if found is None:
        return None
    path, state = found
    if state.get("config_hash") != config_hash:
        import warnings

        dest = ckpt.supersede(config.checkpoint_dir, str(state.get("config_hash")))
        warnings.warn(
            f"run {config.run_name!r}: checkpoint {path} was written with another config/model "
            f"(hash {state.get('config_hash')} != {config_hash}); moved to {dest}, training from scratch",
            CheckpointMismatchWarning, stacklevel=3,
        )
        return None
    return path, state


# ---------------------------------------------------------------------------------------------- entry point
def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
    train_dataset: Dataset,
    val_dataset: Dataset | None = None,
    config: TrainerConfig | None = None,
    val_fn: Callable[[nn.Module, Iterable], dict[str, float]] | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
) -> TrainResult:
    """Train ``model`` in place (see the module docstring); returns a :class:`TrainResult`.

    Under torchrun every rank calls this and gets the (identical) result. With ``config.num_processes > 1``
    outside torchrun, workers are launched here and the caller's ``model`` receives rank 0's weights; then
    ``model``, ``loss_fn``, the datasets, ``val_fn`` and ``callbacks`` must be picklable (module-level),
    and callbacks run in rank 0's worker process.
    """
    if config is None:
        raise ValueError("train() needs a TrainerConfig")
    ctx = ddp.context_from_env()
    if config.num_processes > 1 and not ctx.is_distributed:
        return _train_with_local_workers(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks)
    if config.num_processes > 1:
        logger.info("running under torchrun (world size %d): num_processes=%d is ignored",
                    ctx.world_size, config.num_processes)
    return _train_in_process(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks, ctx,
                             log_to_mlflow=True)


def _train_in_process(model, loss_fn, train_dataset, val_dataset, config: TrainerConfig, val_fn, callbacks,
                      ctx: ddp.DistContext, log_to_mlflow: bool) -> TrainResult:
    device = resolve_device(config.device)
    if ctx.is_distributed and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    created_group = ddp.init_process_group(ctx, device)
    try:
        config_hash = ckpt.stable_hash(config_fingerprint(config, model, loss_fn, len(train_dataset), dataset_fingerprint(train_dataset)))
        # Rank 0 decides about the checkpoint (it may move a stale one aside); the others follow its choice.
        choice = _find_resumable(config, config_hash) if ctx.is_main else None
        resume_path = ddp.broadcast_object(str(choice[0]) if choice else None, ctx)
        state = None
        if resume_path is not None:
            state = choice[1] if ctx.is_main else ckpt.read_checkpoint(resume_path)
            if state.get("complete"):
                return _finished_result(model, state, Path(resume_path))
        mlflow_on = log_to_mlflow and ctx.is_main and tracking.active()
        run_ctx = tracking.child_run(config.run_name) if mlflow_on else contextlib.nullcontext()
        with run_ctx:
            if mlflow_on:
                _log_params(config, model, config_hash, ctx.world_size)
            result = _loop(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks, ctx, device,
                           config_hash, state, mlflow_on)
            if mlflow_on:
                _weights_artifact(result.model)
            return result
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _loop(model, loss_fn, train_dataset, val_dataset, config: TrainerConfig, val_fn, callbacks,
          ctx: ddp.DistContext, device: torch.device, config_hash: str, state: dict | None,
          mlflow_on: bool) -> TrainResult:
    from tqdm.auto import tqdm

    seed_everything(config.seed + ctx.rank)
    num_samples = len(train_dataset)
    batch_size = config.batch_size
    if num_samples < batch_size:
        smaller = (num_samples // ctx.world_size) * ctx.world_size
        if smaller < 1:
            raise ValueError(f"run {config.run_name!r}: {num_samples} training samples for {ctx.world_size} processes")
        logger.warning("run %r: only %d training samples < batch_size %d; using batches of %d",
                       config.run_name, num_samples, batch_size, smaller)
        batch_size = smaller

    model.to(device)
    model.train()
    optimizer = _make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_lr_lambda(config.warmup_steps, config.max_steps, config.schedule))
    amp_dtype = _amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

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
            tracking.set_tags({"trainer.resumed_from_step": start_step})
            for row in history:
                _log_history_row(row)

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

    loss_module = _LossModule(model, loss_fn)
    wrapped = loss_module
    if ctx.is_distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # models whose loss skips a head (e.g. an optional latent head)
        )
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = config.grad_clip if config.grad_clip is not None else float("inf")

    def validate_and_callback(step: int) -> dict[str, float]:
        """Rank 0 validates and runs the callbacks; the metrics (or the error) reach every rank."""
        metrics, error = {}, None
        if ctx.is_main:
            try:
                if val_loader is not None:
                    model.eval()
                    with torch.no_grad():
                        batches = _DeviceBatches(val_loader, device)
                        if val_fn is not None:
                            with autocast():
                                metrics = _floats(val_fn(model, batches))
                        else:
                            metrics = mean_loss_metrics(model, loss_fn, batches, autocast)
                    model.train()
                for cb in callbacks:
                    cb(step, dict(metrics))
            except BaseException as err:  # noqa: BLE001 - re-raised below on every rank
                error = ddp.picklable_error(err) if ctx.is_distributed else err
        metrics, error = ddp.broadcast_object((metrics, error), ctx)
        if error is not None:
            setattr(error, _ALL_RANKS, True)
            raise error
        return metrics

    bar = tqdm(total=config.max_steps, initial=start_step, desc=config.run_name, dynamic_ncols=True,
               disable=not (config.progress and ctx.is_main))
    it = iter(loader)
    t_window = time.perf_counter()
    try:
        for step in range(start_step + 1, config.max_steps + 1):
            batch = move_to(next(it), device)
            with autocast():
                loss, metrics = wrapped(batch)
            step_metrics = _floats(metrics)
            if ctx.is_distributed:  # global means over the ranks; a NaN loss on any rank reaches all ranks
                names = sorted(step_metrics)
                packed = torch.tensor([float(loss.detach())] + [step_metrics[k] for k in names],
                                      dtype=torch.float64, device=device)
                torch.distributed.all_reduce(packed)
                packed = (packed / ctx.world_size).tolist()
                loss_value, step_metrics = packed[0], dict(zip(names, packed[1:]))
            else:
                loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                err = NonFiniteLossError(
                    f"run {config.run_name!r}: loss is {loss_value} at step {step} (batch of epoch "
                    f"{sampler.position(step - 1)[0]}); lower lr, check the inputs, or use amp='off'")
                setattr(err, _ALL_RANKS, True)
                raise err
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if not math.isfinite(grad_norm) and not scaler.is_enabled():
                err = NonFiniteLossError(
                    f"run {config.run_name!r}: gradient norm is {grad_norm} at step {step} (loss {loss_value:.4g})")
                setattr(err, _ALL_RANKS, True)
                raise err
            lr_used = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            row = {"loss": loss_value, **step_metrics, "grad_norm": grad_norm}
            for k, v in row.items():
                accum[k] = accum.get(k, 0.0) + v
            accum_n += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                train_row = {"step": step, "split": "train", **{k: v / accum_n for k, v in accum.items()},
                             "lr": lr_used}
                history.append(train_row)
                elapsed = time.perf_counter() - t_window
                if mlflow_on:
                    _log_history_row(train_row)
                    tracking.log_metrics({"train/steps_per_s": accum_n / max(elapsed, 1e-9)}, step=step)
                bar.set_postfix(loss=f"{train_row['loss']:.4g}", lr=f"{lr_used:.2e}")
                accum, accum_n, t_window = {}, 0, time.perf_counter()
            if step % config.val_every == 0 or step == config.max_steps:
                val_metrics = validate_and_callback(step)
                if val_metrics:
                    final_val = val_metrics
                    val_row = {"step": step, "split": "val", **val_metrics}
                    history.append(val_row)
                    if mlflow_on:
                        _log_history_row(val_row)
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
                    })
    finally:
        bar.close()
        del it  # stops DataLoader workers

    return TrainResult(model=model.cpu().eval(), history=pd.DataFrame(history), final_val=final_val,
                       resumed_from_step=start_step if state is not None else None)


# ------------------------------------------------------------------------------------ local DDP (num_processes)
def _worker_entry(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks):
    """Body of each worker launched by :func:`_train_with_local_workers`; rank 0 returns its result."""
    ctx = ddp.context_from_env()
    # Tensors passed to spawned workers arrive in shared memory, the same storage in every worker: each rank
    # needs its own copy, or all ranks' optimizers would step the same parameters.
    model = copy.deepcopy(model)
    try:
        result = _train_in_process(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks, ctx,
                                   log_to_mlflow=False)
    except BaseException as err:  # noqa: BLE001
        if getattr(err, _ALL_RANKS, False):  # every rank raised it: exit cleanly, rank 0 reports it
            return {"error": ddp.picklable_error(err)} if ctx.is_main else None
        raise
    if not ctx.is_main:
        return None
    return {"state_dict": {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()},
            "history": result.history.to_dict("records"), "final_val": result.final_val,
            "resumed_from_step": result.resumed_from_step}


def _train_with_local_workers(model, loss_fn, train_dataset, val_dataset, config: TrainerConfig, val_fn,
                              callbacks) -> TrainResult:
    device = resolve_device(config.device)
    if device.type == "cuda" and config.num_processes > torch.cuda.device_count():
        raise ValueError(f"run {config.run_name!r}: num_processes={config.num_processes} > "
                         f"{torch.cuda.device_count()} visible CUDA devices")
    config_hash = ckpt.stable_hash(config_fingerprint(config, model, loss_fn, len(train_dataset), dataset_fingerprint(train_dataset)))
    found = _find_resumable(config, config_hash)
    if found is not None and found[1].get("complete"):
        return _finished_result(model, found[1], found[0])
    model.cpu()
    returned = ddp.launch_local(_worker_entry, (model, loss_fn, train_dataset, val_dataset, config, val_fn,
                                                tuple(callbacks)), config.num_processes)
    out = returned.get(0)
    if out is None:
        raise RuntimeError(f"run {config.run_name!r}: rank 0 returned nothing")
    if out.get("error") is not None:
        raise out["error"]
    model.load_state_dict(out["state_dict"])
    model.eval()
    result = TrainResult(model=model, history=pd.DataFrame(out["history"]), final_val=out["final_val"],
                         resumed_from_step=out["resumed_from_step"])
    if tracking.active():  # the workers have no MLflow run: log here, after the fact
        with tracking.child_run(config.run_name):
            _log_params(config, model, config_hash, config.num_processes)
            for row in out["history"]:
                _log_history_row({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))})
            _weights_artifact(model)
    return result
