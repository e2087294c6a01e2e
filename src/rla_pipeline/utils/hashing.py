"""Content digests used as cache, recipe and checkpoint keys: one helper per kind of content.

- :func:`sha256_file`: a file's bytes, streamed.
- :func:`nested_digest`: nested dicts/lists of arrays, tensors and scalars (dataset fingerprints, trainer buffers).
- :func:`state_dict_digest`: a module's weights exactly as stored (names, dtypes, shapes, raw bytes).

Each digest is part of a stored key (feature-cache entries, checkpoint config hashes): changing what one
hashes invalidates what was stored under it, so they are kept byte-for-byte stable.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np


def sha256_file(path: str | os.PathLike, h=None, block: int = 1 << 22) -> str:
    """Stream a file into ``h`` (a new sha256 when None) and return its hex digest."""
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def _feed(h, x: Any) -> None:
    import torch  # here, not at the top: episode and file hashing should not pay for importing torch

    if x is None:
        h.update(b"none")
    elif isinstance(x, dict):
        for k in sorted(x):
            h.update(str(k).encode())
            _feed(h, x[k])
    elif isinstance(x, (list, tuple)):
        for v in x:
            _feed(h, v)
    elif isinstance(x, torch.Tensor):  # as float32 values: the same numbers in another dtype hash alike
        h.update(x.detach().float().cpu().contiguous().numpy().tobytes())
    elif isinstance(x, np.ndarray):
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        h.update(repr(x).encode())


def nested_digest(*groups: Any) -> str:
    """sha256 (16 hex) over every array in ``groups`` (nested lists/dicts of arrays, tensors or scalars, in order)."""
    h = hashlib.sha256()
    for g in groups:
        _feed(h, g)
    return h.hexdigest()[:16]


def state_dict_digest(model) -> str:
    """sha256 over ``model``'s parameters and buffers (names, dtypes, shapes, bytes), in name order."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
