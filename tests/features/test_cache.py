"""FeatureCache: content addressing, no-op re-runs, selective recompute, corruption recovery, atomicity, rank split."""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from rla_pipeline.episodes.synthetic import synthetic_episode
from rla_pipeline.features.cache import MANIFEST_COLUMNS, FeatureCache, FeatureCacheConfig, verify_entry
from rla_pipeline.features.encoder import DinoEncoder

from .conftest import make_encoder

CFG = FeatureCacheConfig(progress=False, prefetch_batches=2)


def _entry_mtimes(cache):
    return {p.name: p.stat().st_mtime_ns for p in cache.entries_dir.glob("*.safetensors")}


def test_first_run_fills_cache_and_manifest(store, tmp_path):
    enc = make_encoder()
    cache = FeatureCache(tmp_path / "cache")
    manifest = cache.update(store, enc, cfg=CFG)
    ids = store.episode_ids()
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert sorted(manifest["episode_id"]) == ids and manifest["key"].is_unique
    assert (manifest[["frames", "tokens", "dims"]].to_numpy() == [20, 4, 384]).all()
    assert set(manifest["weights_tag"]) == {"random-init"}
    assert cache.manifest().equals(manifest)
    assert enc.calls == 15  # 120 frames in full batches of 8 (batches span episodes)
    # tokens equal a direct encode of the masked frames (float16 rounding)
    eid = ids[0]
    direct = enc.encode(store.read_frames(eid), store.read_masks(eid))
    torch.testing.assert_close(torch.from_numpy(np.asarray(cache.tokens(eid), dtype=np.float32)), direct, atol=2e-2, rtol=2e-3)
    mm = cache.tokens(eid)
    assert isinstance(mm, np.memmap) and mm.dtype == np.float16 and mm.shape == (20, 4, 384)
    # actions copied; actionless episodes have none
    kinds = dict(zip(manifest["episode_id"], manifest["kind"]))
    for e in ids:
        steps = cache.steps(e)
        assert ("action" in steps) == (kinds[e] != "actionless")
    assert cache.last_stats["frames_encoded"] == 120


def test_rerun_with_nothing_changed_encodes_nothing(store, tmp_path):
    enc = make_encoder()
    cache = FeatureCache(tmp_path / "cache")
    first = cache.update(store, enc, cfg=CFG)
    calls, mtimes = enc.calls, _entry_mtimes(cache)
    again = cache.update(store, enc, cfg=CFG)
    assert enc.calls == calls, "a re-run on a full cache must not call the encoder"
    assert _entry_mtimes(cache) == mtimes
    assert again.equals(first)
    assert cache.last_stats["episodes_encoded"] == 0


def test_image_size_change_recomputes_everything_and_old_entries_stay(store, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    small = cache.update(store, make_encoder(image_size=28), cfg=CFG)
    enc = make_encoder(image_size=42)
    big = cache.update(store, enc, cfg=CFG)
    assert enc.calls == 15
    assert set(big["tokens"]) == {9} and not set(big["key"]) & set(small["key"])
    assert len(list(cache.entries_dir.glob("*.safetensors"))) == 12
    back = make_encoder(image_size=28)
    cache.update(store, back, cfg=CFG)  # switching back is free
    assert back.calls == 0
    assert cache.prune() == 6


def test_changed_episode_recomputes_only_that_episode(store, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    before = cache.update(store, make_encoder(), cfg=CFG).set_index("episode_id")
    eid = store.episode_ids()[0]
    meta = store.read_meta(eid)
    store.write(synthetic_episode(eid, task=meta.task, kind=meta.kind, num_frames=20, size=48, seed=99))
    enc = make_encoder()
    after = cache.update(store, enc, cfg=CFG).set_index("episode_id")
    assert enc.calls == 3
    changed = set(after.index[after["key"] != before["key"]])
    assert changed == {eid}


def test_weights_change_recomputes(store, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    a = cache.update(store, make_encoder(seed=0), cfg=CFG)
    enc = make_encoder(seed=1)
    b = cache.update(store, enc, cfg=CFG)
    assert enc.calls == 15 and not set(a["key"]) & set(b["key"])
    assert set(b["weights_digest"]) == {enc.weights_digest}


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_entry_is_detected_and_recomputed(store, tmp_path, caplog, damage):
    cache = FeatureCache(tmp_path / "cache")
    first = cache.update(store, make_encoder(), cfg=CFG)
    row = first.iloc[2]
    path = cache.root / row["path"]
    good = cache.tokens(row["episode_id"]).copy()
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"\x00" * 16)
    path.write_bytes(bytes(data))
    enc = make_encoder()
    with caplog.at_level(logging.WARNING, logger="rla_pipeline.features.cache"):
        again = cache.update(store, enc, cfg=CFG)
    assert enc.calls == 3, "only the damaged episode is re-encoded"
    assert row["episode_id"] in caplog.text and "corrupt" in caplog.text
    np.testing.assert_array_equal(cache.tokens(row["episode_id"]), good)
    assert again.iloc[2]["sha256"] == row["sha256"]
    verify_entry(path, row["key"])


class _Crash(Exception):
    pass


class CrashingEncoder(DinoEncoder):
    """A real encoder that dies after ``crash_after`` forward passes (an interrupted run)."""

    crash_after = 4

    def encode_batch(self, frames, masks=None):
        if self.calls >= self.crash_after:
            raise _Crash("killed")
        return super().encode_batch(frames, masks)


def test_interrupted_run_leaves_no_half_written_entry(store, tmp_path):
    from rla_pipeline.features.encoder import EncoderConfig

    from .conftest import TINY

    cache = FeatureCache(tmp_path / "cache")
    crashing = CrashingEncoder(EncoderConfig(**TINY))
    with pytest.raises(_Crash):
        cache.update(store, crashing, cfg=CFG)
    files = list(cache.entries_dir.iterdir())
    assert all(not p.name.startswith(".tmp-") for p in files)
    assert len(files) == 1, "only the one episode that finished (20 of the 32 frames encoded) has an entry"
    verify_entry(files[0])
    assert not cache.manifest_path.exists()
    # a temp file left by a kill -9 during a write is cleaned up by the next run, which finishes the rest
    (cache.entries_dir / ".tmp-deadbeef.safetensors.123").write_bytes(b"half")
    enc = make_encoder()
    manifest = cache.update(store, enc, cfg=CFG)
    assert enc.calls == 13 and len(manifest) == 6  # 100 frames left
    assert sorted(p.name for p in cache.entries_dir.iterdir() if p.name.startswith(".tmp-")) == []


def test_decode_error_propagates_naming_the_episode(store, tmp_path):
    from rla_pipeline.episodes.format import EpisodeError

    eid = store.episode_ids()[1]
    video = store.video_path(eid)
    video.write_bytes(video.read_bytes()[:300])
    with pytest.raises(EpisodeError, match=eid):
        FeatureCache(tmp_path / "cache").update(store, make_encoder(), cfg=CFG)


def test_two_ranks_split_episodes_and_agree_on_the_manifest(store, tmp_path):
    cache_root = tmp_path / "cache"
    encs = [make_encoder(), make_encoder()]
    results: dict[int, object] = {}

    def run(rank):
        results[rank] = FeatureCache(cache_root).update(store, encs[rank], cfg=CFG, rank=rank, world_size=2)

    other = threading.Thread(target=run, args=(1,))
    other.start()
    run(0)
    other.join(timeout=120)
    assert encs[0].calls == encs[1].calls == 8, "3 episodes (60 frames) each"
    assert results[0].equals(results[1])
    assert FeatureCache(cache_root).manifest().equals(results[0])


def test_entries_are_standard_safetensors_with_reproducible_bytes(store, tmp_path):
    from safetensors import safe_open

    a = FeatureCache(tmp_path / "a").update(store, make_encoder(), cfg=CFG)
    b = FeatureCache(tmp_path / "b").update(store, make_encoder(), cfg=CFG)
    assert list(a["sha256"]) == list(b["sha256"])
    with safe_open(str(tmp_path / "a" / a.iloc[0]["path"]), framework="np") as f:
        assert f.metadata()["episode_id"] == a.iloc[0]["episode_id"]
        np.testing.assert_array_equal(f.get_tensor("tokens"), FeatureCache(tmp_path / "a").tokens(a.iloc[0]["episode_id"]))
