"""Content digests used as cache and recipe keys."""
from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike, h=None, block: int = 1 << 22):
    """Stream a file into ``h`` (a new sha256 when None) and return its hex digest."""
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
