"""A content-addressed cache of frozen DINO patch tokens, one safetensors file per episode.

Layout under the cache root (catalog entry ``feature_cache``)::

    entries/<key>.safetensors   "tokens": float16 (T, N, D), header metadata = everything in the key + payload sha256
    steps/<steps_key>.safetensors  "action" float32 (T, A) and/or "proprio" float32 (T, P) copied from the episode's
                                   step table (absent tensors = actionless episode), keyed by the step file's sha256
    manifest.parquet            one row per episode of the *current* configuration (see ``MANIFEST_COLUMNS``)

``key = sha256(encoder name, weights digest, image size, preprocessing (mask on/off, resize, normalisation),
video digest of the episode (mp4 bytes + mask file), camera)``. Entries of other configurations stay on disk (switching
back is free) until :meth:`FeatureCache.prune` removes them.

Guarantees of :meth:`FeatureCache.update`:
- a re-run with nothing changed encodes nothing (it only checks the entries' checksums);
- a change of any key ingredient recomputes exactly the episodes whose key changed;
- every file is written atomically (temp sibling + rename): an interrupted run leaves no half-written entry,
  and the next run deletes the temp leftovers;
- a corrupt entry (checksum mismatch, truncated or unreadable file) is logged with its episode id and recomputed;
- decoding runs in a background thread (``store.iter_frame_batches``) while the model encodes the previous batch.

Where the parts live: the entry file format and its checks in ``features/entry_file.py``; decoding, batch packing
and encoding in ``features/encode_stream.py``; this module keeps the folder, keys, manifest and :meth:`update`.

Multi-process / multi-GPU: under ``torchrun`` (env ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), the episodes that need
work are split by episode (``todo[rank::world_size]``); each process writes its own entries, then waits for all
entries (``torch.distributed.barrier()`` when a process group is initialised, else by polling the files), and rank 0
rebuilds the manifest from the entries. Readers never load the whole dataset: :meth:`FeatureCache.tokens` is a
``numpy.memmap`` into the entry file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from rla_pipeline.features.encode_stream import encode_episodes
# Re-exported: callers and tests import the entry-file names from here.
from rla_pipeline.features.entry_file import (FORMAT_VERSION, CacheEntryError, entry_bytes, memmap_tokens,
                                              read_header, serialize_tokens, verify_entry)
from rla_pipeline.utils.atomic import atomic_path, atomic_write_bytes, remove_stale_temps
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import json_digest, sha256_file

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "MANIFEST_COLUMNS", "CacheEntryError", "FeatureCache", "FeatureCacheConfig", "dist_info",
           "read_header", "serialize_tokens", "verify_entry"]

MANIFEST_COLUMNS = [
    "episode_id", "key", "frames", "tokens", "dims", "encoder", "weights_tag", "weights_digest", "image_size",
    "mask_background", "video_digest", "bytes", "sha256", "path",
    "steps_key", "action_dim", "proprio_dim", "task", "kind",
]


@dataclass
class FeatureCacheConfig:
    """How the cache is filled (the encoder itself is ``EncoderConfig``).

    camera: camera to encode (None: the episode's first camera).
    verify: on every run, re-hash each existing entry's payload against the checksum in its header (cheap next to
        encoding: about 1 GB/s); False only checks that the file parses and has the right shape.
    prefetch_batches: decoded frame batches the background decoder may run ahead of the encoder.
    progress: report encoding progress (frames and episodes; a bar on a terminal, rate-limited log lines
        otherwise, utils.progress; RLA_PROGRESS=0 silences it).
    wait_timeout_s: multi-process only: how long rank 0 waits for the other ranks' entries.
    """

    camera: str | None = None
    verify: bool = True
    prefetch_batches: int = 4
    progress: bool = True
    wait_timeout_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.prefetch_batches < 1:
            raise ValueError("prefetch_batches must be >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FeatureCacheConfig":
        return from_dict(cls, d, where="features.cache")


def dist_info() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment variables; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))

class FeatureCache:
    """Handle on a cache folder (cheap to create). See the module docstring for layout and guarantees."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._manifest: pd.DataFrame | None = None
        self._manifest_mtime: float | None = None
        self.last_stats: dict[str, float] = {}  # counts and seconds of the last update() (for MLflow)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    # ------------------------------------------------------------------ paths and keys
    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    @property
    def steps_dir(self) -> Path:
        return self.root / "steps"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    def entry_path(self, key: str) -> Path:
        return self.entries_dir / f"{key}.safetensors"

    def steps_path(self, steps_key: str) -> Path:
        return self.steps_dir / f"{steps_key}.safetensors"

    @staticmethod
    def make_key(encoder_description: dict[str, Any], video_digest: str, camera: str) -> str:
        """sha256 over what determines an episode's tokens (encoder + weights + preprocessing + pixels + camera)."""
        return json_digest(
            {"format": FORMAT_VERSION, **encoder_description, "video_digest": video_digest, "camera": camera},
            default=str,
        )

    # ------------------------------------------------------------------ reading
    def manifest(self) -> pd.DataFrame:
        """The manifest of the last :meth:`update` (empty frame with the columns when none)."""
        if not self.manifest_path.exists():
            return pd.DataFrame(columns=MANIFEST_COLUMNS)
        mtime = self.manifest_path.stat().st_mtime_ns
        if self._manifest is None or self._manifest_mtime != mtime:
            self._manifest = pd.read_parquet(self.manifest_path)
            self._manifest_mtime = mtime
        return self._manifest

    def _row(self, eid: str) -> pd.Series:
        m = self.manifest()
        rows = m[m["episode_id"] == eid]
        if rows.empty:
            raise KeyError(f"episode {eid!r} is not in the feature cache at {self.root} (run the features pipeline)")
        return rows.iloc[0]

    def episode_ids(self) -> list[str]:
        return sorted(self.manifest()["episode_id"].tolist())

    def tokens(self, eid: str) -> np.ndarray:
        """float16 (T, N, D) memory-mapped from the entry file (read-only, nothing loaded until touched)."""
        return memmap_tokens(self.root / self._row(eid)["path"])

    def steps(self, eid: str) -> dict[str, np.ndarray]:
        """The episode's ``action`` float32 (T, A) and ``proprio`` (T, P) arrays (keys absent when the episode has none)."""
        from safetensors.numpy import load_file

        return load_file(str(self.steps_path(self._row(eid)["steps_key"])))

    # ------------------------------------------------------------------ writing
    def _write_entry(self, key: str, tokens: np.ndarray, meta: dict[str, str]) -> dict[str, Any]:
        data, meta = entry_bytes(key, tokens, meta)
        path = atomic_write_bytes(self.entry_path(key), data)
        return {**meta, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "path": path}

    def _ensure_steps(self, store, eid: str) -> tuple[str, int | None, int | None]:
        """Copy the episode's actions/proprio into the cache (content-addressed by the step file bytes)."""
        from safetensors.numpy import load_file, save

        from rla_pipeline.episodes.format import episode_actions, episode_proprio

        steps_key = sha256_file(store.episode_dir(eid) / "steps.parquet")
        path = self.steps_path(steps_key)
        if path.exists():
            try:
                arrays = load_file(str(path))
                a, p = arrays.get("action"), arrays.get("proprio")
                return steps_key, None if a is None else a.shape[1], None if p is None else p.shape[1]
            except Exception:
                logger.warning("step arrays of episode %s at %s are unreadable: rewriting them", eid, path)
        steps = store.read_steps(eid)
        arrays = {}
        for name, arr in (("action", episode_actions(steps)), ("proprio", episode_proprio(steps))):
            if arr is not None:
                arrays[name] = np.ascontiguousarray(arr, dtype=np.float32)
        if not arrays:  # safetensors needs at least one tensor
            arrays["frame_index"] = np.arange(len(steps), dtype=np.int64)
        atomic_write_bytes(path, save(arrays, metadata={"episode_id": eid}))
        a, p = arrays.get("action"), arrays.get("proprio")
        return steps_key, None if a is None else a.shape[1], None if p is None else p.shape[1]

    def update(
        self,
        store,
        enc,
        episode_ids: Iterable[str] | None = None,
        cfg: FeatureCacheConfig | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> pd.DataFrame:
        """Make the cache hold tokens of ``episode_ids`` (default: all of ``store``) under encoder ``enc``.

        ``rank``/``world_size`` default to torchrun's environment (see :func:`dist_info`).
        Returns the manifest (one row per episode, ``MANIFEST_COLUMNS``), also written to ``manifest.parquet`` by rank 0.
        """
        cfg = cfg or FeatureCacheConfig()
        env_rank, env_world = dist_info()
        rank = env_rank if rank is None else rank
        world = env_world if world_size is None else world_size
        eids = sorted(store.episode_ids() if episode_ids is None else set(episode_ids))
        for d in (self.entries_dir, self.steps_dir):
            d.mkdir(parents=True, exist_ok=True)
            # With several ranks, a young temp file may be another rank's write in progress: leave it.
            n = remove_stale_temps(d, min_age_s=0.0 if world == 1 else 3600.0)
            if n:
                logger.info("removed %d leftovers of an interrupted run under %s", n, d)

        t0 = time.perf_counter()
        desc = enc.describe()
        plan: dict[str, dict[str, Any]] = {}
        todo: list[str] = []
        for eid in eids:
            meta = store.read_meta(eid)
            cam = cfg.camera or meta.cameras[0]
            if cam not in meta.cameras:
                raise ValueError(f"episode {eid} has no camera {cam!r} (has {meta.cameras})")
            video_digest = store.video_digest(eid, cam)
            key = self.make_key(desc, video_digest, cam)
            plan[eid] = {"key": key, "camera": cam, "video_digest": video_digest, "meta": meta}
            path = self.entry_path(key)
            if path.exists():
                try:
                    plan[eid]["entry"] = verify_entry(path, key, full=cfg.verify)
                    continue
                except (CacheEntryError, OSError, ValueError, KeyError) as exc:
                    logger.warning("feature cache entry of episode %s is corrupt (%s): recomputing it", eid, exc)
            todo.append(eid)
        mine = todo[rank::world]
        logger.info(
            "feature cache %s: %d episodes, %d up to date, %d to encode (%d on rank %d/%d), checked in %.2fs",
            self.root, len(eids), len(eids) - len(todo), len(todo), len(mine), rank, world, time.perf_counter() - t0,
        )
        t_check = time.perf_counter() - t0
        if mine:
            describe = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in desc.items()}

            def write(eid: str, tokens: np.ndarray) -> dict[str, Any]:
                p = plan[eid]
                meta = {"episode_id": eid, "camera": p["camera"], "video_digest": p["video_digest"],
                        "shape": json.dumps(list(tokens.shape)), **describe}
                return self._write_entry(p["key"], tokens, meta)

            work = [(e, plan[e]["camera"], int(plan[e]["meta"].num_frames)) for e in mine]
            for eid, entry in encode_episodes(store, enc, work, cfg.prefetch_batches, cfg.progress, write):
                plan[eid]["entry"] = entry
        t_encode = time.perf_counter() - t0 - t_check
        encoded_frames = sum(int(plan[e]["meta"].num_frames) for e in mine)
        self.last_stats = {
            "episodes": len(eids), "episodes_up_to_date": len(eids) - len(todo), "episodes_encoded": len(mine),
            "frames_encoded": encoded_frames, "check_seconds": t_check, "encode_seconds": t_encode,
            "encode_frames_per_s": encoded_frames / t_encode if encoded_frames and t_encode > 0 else 0.0,
        }
        if world > 1 and todo:
            self._wait_for_entries([plan[e]["key"] for e in todo], cfg.wait_timeout_s)
            for eid in todo:
                if "entry" not in plan[eid]:
                    plan[eid]["entry"] = verify_entry(self.entry_path(plan[eid]["key"]), plan[eid]["key"], full=True)

        rows = []
        for eid in eids:
            p, e, meta = plan[eid], plan[eid]["entry"], plan[eid]["meta"]
            steps_key, a_dim, p_dim = self._ensure_steps(store, eid)
            shape = json.loads(e["shape"])
            rows.append(
                {
                    "episode_id": eid, "key": p["key"], "frames": shape[0], "tokens": shape[1], "dims": shape[2],
                    "encoder": desc["encoder"], "weights_tag": desc["weights_tag"], "weights_digest": desc["weights_digest"],
                    "image_size": int(desc["image_size"]), "mask_background": bool(desc["mask_background"]),
                    "video_digest": p["video_digest"], "bytes": int(e["bytes"]), "sha256": e["sha256"],
                    "path": str(self.entry_path(p["key"]).relative_to(self.root)),
                    "steps_key": steps_key, "action_dim": a_dim, "proprio_dim": p_dim, "task": meta.task, "kind": meta.kind,
                }
            )
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        for col in ("action_dim", "proprio_dim"):
            manifest[col] = manifest[col].astype("Int64")
        if rank == 0:
            with atomic_path(self.manifest_path) as tmp:
                manifest.to_parquet(tmp, index=False)
        return manifest

    def _wait_for_entries(self, keys: list[str], timeout_s: float, poll_s: float = 0.2) -> None:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
                return
        except ImportError:  # pragma: no cover
            pass
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [k for k in keys if not self.entry_path(k).exists()]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} feature-cache entries from other ranks did not appear in {timeout_s}s")
            time.sleep(poll_s)

    # ------------------------------------------------------------------ housekeeping
    def prune(self, keep_keys: Iterable[str] | None = None) -> int:
        """Delete entries whose key is not in ``keep_keys`` (default: the manifest's); returns how many."""
        keep = set(keep_keys) if keep_keys is not None else set(self.manifest()["key"])
        n = 0
        for p in self.entries_dir.glob("*.safetensors"):
            if p.stem not in keep:
                p.unlink()
                n += 1
        return n
