"""DDP plumbing for the trainer: who am I (rank/world), process group set-up, small collectives, local launch.

Two ways in:
  (a) the script runs under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment): the
      trainer joins the process group torchrun prepared (``init_method="env://"``);
  (b) ``TrainerConfig.num_processes > 1`` in a plain process (a Kedro node): :func:`launch_local` starts the
      workers with ``torch.distributed.launcher.api.elastic_launch`` (the engine behind ``torchrun
      --standalone``) and hands back what each worker returned.
Backend: ``nccl`` on CUDA, ``gloo`` on CPU.
"""
from __future__ import annotations

import datetime
import os
import pickle
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job. ``world_size == 1`` means plain single-process training."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (absent: a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
        world_size=world,
    )


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(ctx: DistContext, device: torch.device, timeout_s: float = 1800) -> bool:
    """Join the process group (env:// from torchrun/elastic); returns True when this call created it."""
    if not ctx.is_distributed or dist.is_initialized():
        return False
    kwargs = {}
    if device.type == "cuda":
        if device.index is None:  # init_process_group(device_id=...) refuses a bare "cuda" (seen on an H200)
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    dist.init_process_group(
        backend=backend_for(device), init_method="env://", rank=ctx.rank, world_size=ctx.world_size,
        timeout=datetime.timedelta(seconds=timeout_s), **kwargs,
    )
    return True


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (identity when not distributed)."""
    if not ctx.is_distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` when not distributed)."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def picklable_error(err: BaseException) -> BaseException:
    """``err`` itself when it survives pickling, else a RuntimeError carrying its formatted traceback."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        return RuntimeError(f"{type(err).__name__} in a training worker:\n{text}")


def launch_local(entry: Callable[..., Any], args: tuple, nprocs: int, run_id: str | None = None) -> dict[int, Any]:
    """Run ``entry(*args)`` in ``nprocs`` fresh worker processes on this machine; ``{rank: return value}``.

    ``entry`` and ``args`` must be picklable (module-level functions, no lambdas): workers are started with
    the ``spawn`` method, like torchrun. Rendezvous is c10d on a free localhost port (``torchrun --standalone``).
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=run_id or f"rla-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    return elastic_launch(config, entry)(*args)


_ALL_RANKS = "_rla_raised_on_all_ranks"


def mark_raised_on_all_ranks(err: BaseException) -> BaseException:
    """Mark ``err`` as raised by every rank at the same step (a NaN loss, a callback's error broadcast to all)."""
    setattr(err, _ALL_RANKS, True)
    return err


def raised_on_all_ranks(err: BaseException) -> bool:
    """True for errors marked by :func:`mark_raised_on_all_ranks`: a worker may exit cleanly, rank 0 reports it."""
    return bool(getattr(err, _ALL_RANKS, False))
