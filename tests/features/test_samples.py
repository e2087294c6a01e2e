"""TokenPairDataset: shapes, lazy mmap reads, deterministic horizons, action chunks; RL helpers; action stats."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig
from rla_pipeline.features.samples import SampleConfig, TokenPairDataset, action_stats

from .conftest import make_encoder


@pytest.fixture()
def filled(store, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    cache.update(store, make_encoder(), cfg=FeatureCacheConfig(progress=False))
    return cache, store.index()


def test_sample_shapes_and_contents(filled):
    cache, index = filled
    ids = list(index["episode_id"])
    cfg = SampleConfig(h_min=2, h_max=6, seed=0)
    ds = TokenPairDataset(cache, index, ids, cfg)
    assert len(ds) == 6 * (20 - 2)
    assert ds.action_dim == 4
    seen_actionless = seen_action = False
    for i in range(0, len(ds), 7):
        s = ds[i]
        h, t, eid = int(s["h"]), int(s["t"]), s["episode_id"]
        assert s["s_t"].shape == s["s_th"].shape == (4, 384) and s["s_t"].dtype == torch.float32
        assert s["actions"].shape == (6, 4) and s["action_mask"].shape == (6,)
        assert 2 <= h <= min(6, 19 - t)
        tok = cache.tokens(eid)
        np.testing.assert_array_equal(s["s_th"].numpy(), tok[t + h].astype(np.float32))
        np.testing.assert_array_equal(s["s_t"].numpy(), tok[t].astype(np.float32))
        steps = cache.steps(eid)
        if "action" in steps:
            seen_action = True
            assert s["action_mask"].sum() == h and s["action_mask"][:h].all()
            np.testing.assert_array_equal(s["actions"][:h].numpy(), steps["action"][t : t + h])
            assert (s["actions"][h:] == 0).all()
        else:
            seen_actionless = True
            assert not s["action_mask"].any() and (s["actions"] == 0).all()
    assert seen_action and seen_actionless
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch["s_t"].shape == (5, 4, 384) and len(batch["episode_id"]) == 5


def test_horizons_are_deterministic_per_seed_and_epoch(filled):
    cache, index = filled
    ids = list(index["episode_id"])
    a = TokenPairDataset(cache, index, ids, SampleConfig(h_min=1, h_max=10, seed=3))
    b = pickle.loads(pickle.dumps(a))  # what a DataLoader worker gets: memmaps reopen lazily
    hs = [int(a[i]["h"]) for i in range(len(a))]
    assert hs == [int(b[i]["h"]) for i in range(len(b))]
    a.set_epoch(1)
    hs1 = [int(a[i]["h"]) for i in range(len(a))]
    assert hs1 != hs
    a.set_epoch(0)
    assert [a.horizon(i) for i in range(len(a))] == hs
    c = TokenPairDataset(cache, index, ids, SampleConfig(h_min=1, h_max=10, seed=4))
    assert [c.horizon(i) for i in range(len(c))] != hs
    assert len(set(hs)) > 5  # actually spread over the range


def test_proprio_source_and_missing_episode(filled):
    cache, index = filled
    demo = [e for e in index["episode_id"] if "demo" in e]
    ds = TokenPairDataset(cache, index, demo, SampleConfig(h_min=2, h_max=4, action_source="proprio"))
    s = ds[0]
    assert ds.action_dim == 2 and s["actions"].shape == (4, 2)
    np.testing.assert_array_equal(s["actions"][: int(s["h"])].numpy(), cache.steps(s["episode_id"])["proprio"][: int(s["h"])])
    with pytest.raises(KeyError, match="not in the feature cache"):
        TokenPairDataset(cache, None, ["nope"], SampleConfig())


def test_action_stats_are_the_mean_and_floored_std_of_the_actions(filled):
    cache, index = filled
    ids = list(index["episode_id"])
    stats = action_stats(cache, ids)
    acts = np.concatenate([cache.steps(e)["action"] for e in ids if "action" in cache.steps(e)])
    np.testing.assert_allclose(stats["mean"], acts.mean(0), rtol=1e-5, atol=1e-6)
    assert stats["std"].shape == (4,) and (stats["std"] > 0).all()  # constant dims floored, not zero


def test_joint_position_chunks_are_the_positions_reached_over_the_chunk(filled):
    """conditioning "joint_positions": the chunk of pair (t, t+h) is q_{t+1..t+h} (the paper's action space), the
    last frame holds its position; the view hands that signal to code written against commanded actions."""
    from rla_pipeline.features.samples import ConditionedCache, conditioning_signal

    cache, index = filled
    demo = [e for e in index["episode_id"] if "demo" in e]
    ds = TokenPairDataset(cache, index, demo, SampleConfig(h_min=2, h_max=5, action_source="joint_positions"))
    checked = 0
    for i in range(0, len(ds), 5):
        s = ds[i]
        t, h = int(s["t"]), int(s["h"])
        q = cache.steps(s["episode_id"])["proprio"]
        assert not np.array_equal(q[t + 1], q[t])  # the fixture's proprio moves, so an off-by-one would show
        np.testing.assert_array_equal(s["actions"][:h].numpy(), q[t + 1 : t + h + 1])
        assert s["action_mask"][:h].all() and not s["action_mask"][h:].any()
        checked += 1
    assert checked > 3
    q = cache.steps(demo[0])["proprio"]
    sig = conditioning_signal(cache.steps(demo[0]), "joint_positions")
    assert sig.shape == q.shape and np.array_equal(sig[-1], q[-1]) and np.array_equal(sig[:-1], q[1:])
    view = ConditionedCache(cache, "joint_positions")
    np.testing.assert_array_equal(view.steps(demo[0])["action"], sig)
    assert view.manifest().equals(cache.manifest())  # everything else is the cache's
    actionless = [e for e in index["episode_id"] if "actionless" in e]
    assert "action" not in view.steps(actionless[0])  # no proprio: no conditioning signal
    stats = action_stats(cache, demo, "joint_positions")
    np.testing.assert_allclose(stats["mean"], np.concatenate(
        [conditioning_signal(cache.steps(e), "joint_positions") for e in demo]).mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="action_source must be one of"):
        SampleConfig(action_source="qpos")
