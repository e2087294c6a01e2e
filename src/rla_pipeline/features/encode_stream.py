"""Episodes -> DINO tokens as a stream: decoding in a background thread, full encoder batches across episodes.

Three stages, each a generator:
  :func:`prefetched_frames`  a thread decodes ``(eid, start, frames, masks)`` segments ahead of the encoder
                             (at most ``prefetch`` of them wait in a queue), so decoding overlaps encoding;
  :func:`packed_batches`     groups segments into forward passes of exactly ``batch_size`` frames, cutting across
                             episode boundaries (short episodes still run full batches), never mixing frame sizes;
  :func:`encode_episodes`    runs the encoder on each pass, fills each episode's (T, N, D) buffer and hands every
                             finished episode to ``write``.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from rla_pipeline.utils.progress import Progress

# (episode_id, first frame index, frames uint8 (b, H, W, 3), masks bool (b, H, W) | None)
Segment = tuple[str, int, np.ndarray, "np.ndarray | None"]


def prefetched_frames(store, work: list[tuple[str, str]], batch: int, with_masks: bool,
                      prefetch: int) -> Iterator[Segment]:
    """Segments of ``batch`` frames of each ``(episode_id, camera)`` in ``work``, decoded in a background thread.

    A decode error is re-raised here. Closing the generator stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for eid, cam in work:
                masks = store.read_masks(eid, cam) if with_masks else None
                start = 0
                for frames in store.iter_frame_batches(eid, cam, batch=batch):
                    m = None if masks is None else masks[start : start + len(frames)]
                    while not stop.is_set():
                        try:
                            q.put((eid, start, frames, m), timeout=0.5)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                    start += len(frames)
            q.put(done)
        except BaseException as exc:  # hand decode errors to the consumer, which re-raises them
            q.put(exc)

    thread = threading.Thread(target=produce, name="feature-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # drain so a blocked producer can finish; it exits on `stop`
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def packed_batches(segments: Iterable[Segment], batch_size: int) -> Iterator[list[Segment]]:
    """Forward passes of ``batch_size`` frames (the last one, and one before a change of frame size, may be short)."""
    pending: list[Segment] = []
    for eid, start, frames, m in segments:
        if pending and pending[0][2].shape[1:] != frames.shape[1:]:
            yield pending  # frames of another size cannot share a batch
            pending = []
        while len(frames):
            room = batch_size - sum(len(seg[2]) for seg in pending)
            pending.append((eid, start, frames[:room], None if m is None else m[:room]))
            start, frames, m = start + len(frames[:room]), frames[room:], None if m is None else m[room:]
            if room <= len(pending[-1][2]):
                yield pending
                pending = []
    if pending:
        yield pending


def encode_episodes(store, enc, work: list[tuple[str, str, int]], prefetch: int, progress: bool,
                    write: Callable[[str, np.ndarray], Any]) -> Iterator[tuple[str, Any]]:
    """Encode ``(episode_id, camera, num_frames)`` episodes; yields ``(episode_id, write(episode_id, tokens))``.

    ``tokens`` is float16 (T, N, D). ``enc`` is a ``DinoEncoder`` (``encode_batch``, ``cfg.batch_size``,
    ``cfg.mask_background``, ``num_tokens``, ``token_dim``).
    """
    num_frames = {eid: n for eid, _, n in work}
    # frames are the unit (episodes differ in length); the episodes written so far ride along as a postfix
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # torchrun: every rank reports its own share
    desc = "DINO features" + (f" (rank {os.environ.get('RANK', '?')}/{world})" if world > 1 else "")
    bar = Progress(sum(num_frames.values()), desc, unit="frame", enabled=progress)
    episodes_done = 0
    bufs: dict[str, np.ndarray] = {}  # episode -> (T, N, D) float16 being filled
    filled: dict[str, int] = {}
    segments = prefetched_frames(store, [(eid, cam) for eid, cam, _ in work], enc.cfg.batch_size,
                                 enc.cfg.mask_background, prefetch)
    try:
        for batch in packed_batches(segments, enc.cfg.batch_size):
            frames = np.concatenate([seg[2] for seg in batch])  # (b, H, W, 3)
            masks = None
            if any(seg[3] is not None for seg in batch):
                masks = np.concatenate([seg[3] if seg[3] is not None else np.ones(seg[2].shape[:3], bool)
                                        for seg in batch])
            tokens = enc.encode_batch(frames, masks).numpy()  # (b, N, D) float32
            at = 0
            for eid, start, seg, _ in batch:
                if eid not in bufs:
                    bufs[eid] = np.empty((num_frames[eid], enc.num_tokens, enc.token_dim), dtype=np.float16)
                    filled[eid] = 0
                bufs[eid][start : start + len(seg)] = tokens[at : at + len(seg)]
                at += len(seg)
                filled[eid] += len(seg)
                if filled[eid] == bufs[eid].shape[0]:
                    yield eid, write(eid, bufs.pop(eid))
                    episodes_done += 1
            bar.set_postfix(episodes=f"{episodes_done}/{len(work)}")
            bar.update(len(frames))
    finally:
        segments.close()
        bar.close()
