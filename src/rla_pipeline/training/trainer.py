"""The one training loop every model in the project goes through: ``train`` and how it launches processes.

```python
result = train(model, loss_fn, train_dataset, val_dataset, TrainerConfig(run_name="rla", max_steps=2000, batch_size=64))
# loss_fn(model, batch) -> (loss: scalar Tensor, metrics: dict[str, float | Tensor])
# val_fn(model, val_batches) -> dict[str, float]     (default: batch-size-weighted mean of loss_fn's metrics)
# callbacks: callable(step: int, val_metrics: dict) -> None, called after every validation (may raise)
```
Where each part lives (``training/``):
  config.py     TrainerConfig, TrainResult, the errors            sampling.py   data order (resumable sampler)
  loop.py       one process's loop (step, log, validate, ckpt)    resume.py     config hash, which checkpoint resumes
  checkpoint.py checkpoint file format, atomic writes, RNG        distributed.py  DDP context, collectives, launch
  optim.py      AdamW, AMP dtype       batches.py  device moves, default validation
  mlflow_logging.py  params/metrics/weights of a child run        model_io.py   save/load a trained model file

One loop, one DDP set-up (``torch.distributed`` with ``env://`` rendezvous), two ways to get the processes:
``torchrun`` starts them (every rank calls ``train``), or ``num_processes > 1`` in a plain process (a Kedro node)
starts them here with ``elastic_launch``, torchrun's own engine. Why both: ``docs/training.md``.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from rla_pipeline import tracking
from rla_pipeline.training import distributed as ddp
from rla_pipeline.training import mlflow_logging
# Re-exported: callers import these from ``training.trainer`` (the public names before the split).
from rla_pipeline.training.batches import mean_loss_metrics, move_to
from rla_pipeline.training.config import (AMP_MODES, HASHED_FIELDS, CheckpointMismatchWarning,
                                          NonFiniteLossError, TrainerConfig, TrainResult)
from rla_pipeline.training.loop import train_in_process
from rla_pipeline.training.resume import config_fingerprint, dataset_fingerprint
from rla_pipeline.training.resume import config_hash as compute_config_hash
from rla_pipeline.training.resume import find_resumable, finished_result
from rla_pipeline.training.sampling import EpochKeyedDataset, GlobalBatchSampler, epoch_order
from rla_pipeline.utils.seeding import resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "AMP_MODES", "HASHED_FIELDS", "CheckpointMismatchWarning", "EpochKeyedDataset", "GlobalBatchSampler",
    "NonFiniteLossError", "TrainResult", "TrainerConfig", "config_fingerprint", "dataset_fingerprint", "epoch_order",
    "mean_loss_metrics", "move_to", "train",
]


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
    train_dataset: Dataset,
    val_dataset: Dataset | None = None,
    config: TrainerConfig | None = None,
    val_fn: Callable[[nn.Module, Iterable], dict[str, float]] | None = None,
    callbacks: Sequence[Callable[[int, dict[str, float]], None]] = (),
) -> TrainResult:
    """Train ``model`` in place (see ``training/loop.py``); returns a :class:`TrainResult`.

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
    return train_in_process(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks, ctx,
                            log_to_mlflow=True)


# ------------------------------------------------------------------------------------ local DDP (num_processes)
def _worker_entry(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks):
    """Body of each worker launched by :func:`_train_with_local_workers`; rank 0 returns its result."""
    ctx = ddp.context_from_env()
    # Tensors passed to spawned workers arrive in shared memory, the same storage in every worker: each rank
    # needs its own copy, or all ranks' optimizers would step the same parameters.
    model = copy.deepcopy(model)
    try:
        result = train_in_process(model, loss_fn, train_dataset, val_dataset, config, val_fn, callbacks, ctx,
                                  log_to_mlflow=False)
    except BaseException as err:  # noqa: BLE001
        if ddp.raised_on_all_ranks(err):  # every rank raised it: exit cleanly, rank 0 reports it
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
    config_hash = compute_config_hash(config, model, loss_fn, train_dataset)
    # A finished run returns here, without starting worker processes (seconds each) to find out.
    found = find_resumable(config, config_hash)
    if found is not None and found[1].get("complete"):
        return finished_result(model, found[1], found[0])
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
            mlflow_logging.log_params(config, model, config_hash, config.num_processes)
            for row in out["history"]:
                mlflow_logging.log_history_row(
                    {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))})
            mlflow_logging.log_weights(model)
    return result
