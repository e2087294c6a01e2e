"""Simulator work on several CPU cores: a small pool of ``spawn``-ed worker processes.

ManiSkill's CPU render (lavapipe) is single-threaded in effect (~25-35 ms a step whatever the image size), so the
only way to use a second core is a second process. Used by ingestion (``episodes.sources.maniskill``) and
evaluation (``rl.sim_eval``); both keep results identical to the in-process path (workers=1) by construction:
every job is fully determined by its arguments, and :func:`ordered_map` hands results back in job order.

* ``spawn``, not ``fork``: SAPIEN's Vulkan state and torch's thread pools do not survive a fork.
* Each worker sets ``LP_NUM_THREADS=1`` (lavapipe) and ``torch.set_num_threads(1)`` before any env is built
  (two workers on two cores must not oversubscribe them) and calls :func:`~rla_pipeline.sim.vulkan.ensure_vulkan`.
* Job functions run with a per-worker dict (:func:`worker_state`) to keep one env per task alive across jobs.
* A job's exception comes back as :class:`SimJobError` naming the job (e.g. task and seed); a crashed worker
  raises ``BrokenProcessPool``; leaving the ``with`` block (error, Ctrl-C) cancels the queued jobs and shuts
  the pool down.
"""
from __future__ import annotations

import atexit
import collections
import logging
import multiprocessing as mp
import os
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

#: Per-process state of a worker (envs kept alive across jobs; the payload given to the pool).
_STATE: dict[str, Any] = {}


class SimJobError(RuntimeError):
    """A job failed in a worker process; the message names the job and carries the worker's traceback."""


def worker_state() -> dict[str, Any]:
    """This process's worker state: ``"payload"`` (what :class:`SimPool` was given) and whatever jobs cache."""
    return _STATE


def _close_cached_envs() -> None:
    for key, value in list(_STATE.items()):
        if key.startswith("env:") and hasattr(value, "close"):
            try:
                value.close()
            except Exception:  # closing at exit: nothing left to report to
                pass
    _STATE.clear()


def _init_worker(payload: Any, torch_threads: int) -> None:
    os.environ["LP_NUM_THREADS"] = "1"  # lavapipe: one render thread per worker (set before sapien loads)
    import torch

    torch.set_num_threads(torch_threads)
    from rla_pipeline.sim.vulkan import ensure_vulkan

    ensure_vulkan()
    _STATE.clear()
    _STATE["payload"] = payload
    atexit.register(_close_cached_envs)


def _run_job(fn: Callable, label: str, args: tuple) -> Any:
    try:
        return fn(*args)
    except BaseException as exc:  # noqa: BLE001 - re-raised in the parent, named; exceptions may not pickle
        raise SimJobError(f"{label}: {type(exc).__name__}: {exc}\n--- worker traceback ---\n"
                          f"{traceback.format_exc()}") from None


def cached(key: str, build: Callable[[], Any]) -> Any:
    """``worker_state()[key]``, built once per process (e.g. one env per task: ``cached("env:PushT-v1", ...)``)."""
    if key not in _STATE:
        _STATE[key] = build()
    return _STATE[key]


class SimPool:
    """``workers`` spawned processes; use as a context manager. ``payload`` reaches every worker once (pickled),
    e.g. the policies an evaluation runs; jobs read it from ``worker_state()["payload"]``."""

    def __init__(self, workers: int, payload: Any = None, torch_threads: int = 1):
        if int(workers) < 2:
            raise ValueError(f"SimPool needs >= 2 workers (1 = run in-process, no pool), got {workers}")
        self.workers = int(workers)
        self._ex = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                       initializer=_init_worker, initargs=(payload, int(torch_threads)))

    def submit(self, fn: Callable, label: str, *args: Any) -> Future:
        """Run ``fn(*args)`` in a worker (``fn`` must be importable: a module-level function)."""
        return self._ex.submit(_run_job, fn, label, args)

    def close(self, cancel: bool = True) -> None:
        self._ex.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> "SimPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close(cancel=True)


def ordered_map(pool: SimPool, fn: Callable, jobs: Iterable[tuple[str, tuple]], window: int | None = None
                ) -> Iterator[Any]:
    """Results of ``fn(*args)`` for ``(label, args)`` in ``jobs``, in job order, at most ``window`` (default: the
    pool's workers) running ahead of the consumer. Jobs are drawn from ``jobs`` lazily, so a consumer that stops
    early (e.g. a quota met) wastes at most ``window`` jobs; the ones still queued are cancelled."""
    window = int(window or pool.workers)
    it = iter(jobs)
    pending: collections.deque[Future] = collections.deque()
    try:
        for label, args in it:
            pending.append(pool.submit(fn, label, *args))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            for label, args in it:  # refill before handing the result out: keep the workers busy
                pending.append(pool.submit(fn, label, *args))
                break
            yield result
    finally:
        for f in pending:
            f.cancel()


__all__ = ["SimPool", "SimJobError", "ordered_map", "worker_state", "cached"]
