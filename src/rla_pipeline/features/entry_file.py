"""One feature-cache entry file: a standard safetensors file holding ``tokens`` float16 (T, N, D).

Header metadata (all strings): ``format`` (``FORMAT_VERSION``), ``key``, ``payload_sha256`` (of the token bytes),
``episode_id``, ``camera``, ``video_digest``, ``shape`` (JSON) and the encoder description. Written with sorted keys
(:func:`serialize_tokens`) so that equal content gives equal bytes; checked by :func:`verify_entry`; read without
loading by :func:`memmap_tokens`.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = "rla-feature-cache/1"


class CacheEntryError(RuntimeError):
    """An entry file is missing, truncated or fails its checksum."""


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header: returns (header dict, byte offset where the data buffer starts).

    Read here rather than through ``safetensors.safe_open``: readers need the byte offset of the tokens to
    memory-map them with numpy, and the checksum pass needs it to hash the payload range, and the library
    exposes neither.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise CacheEntryError(f"{path}: truncated (no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            raise CacheEntryError(f"{path}: header length {n} does not fit a {size}-byte file")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise CacheEntryError(f"{path}: unreadable header ({exc})") from exc
    return header, 8 + n


def serialize_tokens(tokens: np.ndarray, meta: dict[str, str]) -> bytes:
    """A safetensors file holding ``tokens`` (float16 (T,N,D)) with a deterministic header (sorted keys).

    The safetensors library (0.8) writes its metadata from a hash map in random order (20 saves of the same
    tensors gave 20 different byte strings); writing the header here makes the same tokens + metadata give the
    same bytes, so the manifest's file sha256 is reproducible. The files stay standard safetensors.
    """
    tokens = np.ascontiguousarray(tokens, dtype="<f2")
    header = {"__metadata__": dict(meta), "tokens": {"dtype": "F16", "shape": list(tokens.shape), "data_offsets": [0, tokens.nbytes]}}
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data buffer starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw + tokens.tobytes()


def verify_entry(path: Path, expect_key: str | None = None, full: bool = True) -> dict[str, Any]:
    """Check an entry file; returns its metadata plus ``sha256`` (whole file) and ``bytes``.

    Raises CacheEntryError on a truncated file, a wrong key, a shape/size mismatch or (``full``) a payload checksum
    mismatch. ``full`` streams the file once and hashes both the whole file and the tensor payload.
    """
    header, start = read_header(path)
    meta = header.get("__metadata__") or {}
    info = header.get("tokens")
    if not info or meta.get("format") != FORMAT_VERSION:
        raise CacheEntryError(f"{path}: not a feature-cache entry")
    if expect_key is not None and meta.get("key") != expect_key:
        raise CacheEntryError(f"{path}: holds key {meta.get('key')}, expected {expect_key}")
    a, b = info["data_offsets"]
    shape = tuple(info["shape"])
    if info["dtype"] != "F16" or b - a != int(np.prod(shape)) * 2:
        raise CacheEntryError(f"{path}: tokens {info['dtype']} {shape} do not match their {b - a} bytes")
    size = path.stat().st_size
    if size != start + b:
        raise CacheEntryError(f"{path}: file is {size} bytes, header says {start + b} (truncated?)")
    out = dict(meta)
    out["bytes"] = size
    if full:
        whole, payload = hashlib.sha256(), hashlib.sha256()
        pos = 0
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                whole.update(block)
                # the payload is the tokens' byte range [start + a, start + b)
                lo, hi = max(start + a - pos, 0), min(start + b - pos, len(block))
                if lo < hi:
                    payload.update(block[lo:hi])
                pos += len(block)
        if payload.hexdigest() != meta.get("payload_sha256"):
            raise CacheEntryError(f"{path}: payload checksum mismatch (corrupt file)")
        out["sha256"] = whole.hexdigest()
    else:
        out["sha256"] = meta.get("file_sha256_unverified", "")
    return out


def memmap_tokens(path: str | os.PathLike) -> np.memmap:
    """The entry's tokens float16 (T, N, D) as a read-only memory map (nothing is read until touched)."""
    header, start = read_header(path)
    info = header["tokens"]
    return np.memmap(path, dtype=np.float16, mode="r", offset=start + info["data_offsets"][0],
                     shape=tuple(info["shape"]))


def entry_bytes(key: str, tokens: np.ndarray, meta: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """``(file bytes, full metadata)`` of the entry holding ``tokens`` under ``key`` (metadata gains format/key/checksum)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.float16)
    meta = {**meta, "format": FORMAT_VERSION, "key": key, "payload_sha256": hashlib.sha256(tokens.data).hexdigest()}
    return serialize_tokens(tokens, meta), meta
