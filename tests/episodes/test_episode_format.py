"""The episode contract: write -> read round trip, and every kind of bad input named by an EpisodeError."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rla_pipeline.episodes.format import EpisodeError, EpisodeStore, validate_index
from rla_pipeline.episodes.synthetic import synthetic_episode
from rla_pipeline.utils.atomic import TMP_PREFIX


@pytest.fixture()
def store(tmp_path):
    return EpisodeStore(tmp_path / "episodes")


def _leftovers(store):
    return [p.name for p in store.root.iterdir() if p.name.startswith(TMP_PREFIX)] if store.root.exists() else []


def test_round_trip_keeps_frames_steps_meta_and_masks(store):
    ep = synthetic_episode("rt-demo", num_frames=12, size=32)
    store.write(ep)
    back = store.read("rt-demo")
    assert back.meta == ep.meta
    assert json.loads((store.root / "rt-demo" / "meta.json").read_text())["episode_id"] == "rt-demo"
    frames = back.frames["base_camera"]
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    # H.264 at crf 15 is lossy but close
    assert np.abs(frames.astype(int) - ep.frames["base_camera"].astype(int)).mean() < 3.0
    np.testing.assert_array_equal(back.masks["base_camera"], ep.masks["base_camera"])
    np.testing.assert_allclose(np.stack(back.steps["action"]), np.stack(ep.steps["action"]))
    np.testing.assert_array_equal(back.steps["success"].to_numpy(), ep.steps["success"].to_numpy())
    assert store.episode_ids() == ["rt-demo"] and store.has("rt-demo", ep.meta.recipe_digest)
    assert not store.has("rt-demo", "another-recipe")


def test_lossless_episodes_decode_to_exactly_the_written_frames(store):
    """What simulator episodes use: RGB H.264 at crf 0 decodes bit for bit (odd sizes too), the lossy default not."""
    ep = synthetic_episode("ll", num_frames=9, size=33)
    store.write(ep, lossless=True)
    np.testing.assert_array_equal(store.read_frames("ll"), ep.frames["base_camera"])
    store.write(synthetic_episode("lossy", num_frames=9, size=33))
    assert not np.array_equal(store.read_frames("lossy"), ep.frames["base_camera"])


def test_step_table_dtypes_on_disk(store):
    store.write(synthetic_episode("dt", num_frames=6, size=32))
    schema = pq.read_schema(store.root / "dt" / "steps.parquet")
    types = {name: str(schema.field(name).type) for name in schema.names}
    assert types == {
        "episode_index": "int64", "frame_index": "int64", "timestamp": "double", "task": "string",
        "action": "list<element: float>", "proprio": "list<element: float>", "reward": "float",
        "success": "bool", "done": "bool",
    }
    steps = store.read_steps("dt")
    assert steps["done"].tolist() == [False] * 5 + [True]
    assert (steps["episode_index"] == store.read_meta("dt").episode_index).all()


def test_actionless_episode_has_null_action_and_proprio(store):
    store.write(synthetic_episode("al", kind="actionless", num_frames=6, size=32))
    steps = store.read_steps("al")
    assert steps["action"].isna().all() and steps["proprio"].isna().all()
    meta = store.read_meta("al")
    assert meta.kind == "actionless" and meta.action_dim is None and meta.proprio_dim is None
    store.validate("al")
    idx = store.index()
    assert idx.loc[0, "episode_id"] == "al" and idx.loc[0, "num_frames"] == 6 and idx.loc[0, "bytes"] > 0


def _bad(ep, case):
    """Break an in-memory episode in one way."""
    if case == "wrong_frame_shape":
        ep.frames["base_camera"] = ep.frames["base_camera"][..., :2]
    elif case == "wrong_action_dim":
        ep.meta.action_dim = 7
    elif case == "nan_action":
        ep.steps.at[3, "action"] = [np.nan, 0.0, 0.0, 1.0]
    elif case == "inf_action":
        ep.steps.at[2, "action"] = [np.inf, 0.0, 0.0, 1.0]
    elif case == "frames_vs_table":
        ep.frames["base_camera"] = ep.frames["base_camera"][:-2]
    elif case == "empty":
        ep.frames["base_camera"] = ep.frames["base_camera"][:0]
        ep.steps = ep.steps.iloc[:0]
        ep.meta.num_frames = 0
    return ep


@pytest.mark.parametrize(
    "case", ["wrong_frame_shape", "wrong_action_dim", "nan_action", "inf_action", "frames_vs_table", "empty"]
)
def test_bad_input_raises_episode_error_naming_episode_and_file_and_writes_nothing(store, case):
    store.write(synthetic_episode("good", num_frames=8, size=32))
    eid = f"bad-{case}"
    ep = _bad(synthetic_episode(eid, num_frames=8, size=32), case)
    with pytest.raises(EpisodeError) as err:
        store.write(ep)
    assert err.value.episode_id == eid and eid in str(err.value)
    assert str(store.root / eid) in str(err.value)  # the file/folder at fault
    assert store.episode_ids() == ["good"] and not (store.root / eid).exists()
    assert _leftovers(store) == []


def test_failure_during_write_leaves_no_half_written_episode(store, monkeypatch):
    import rla_pipeline.episodes.format as fmt

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.pq, "write_table", boom)  # fails after the video was encoded
    with pytest.raises(OSError):
        store.write(synthetic_episode("half", num_frames=6, size=32))
    assert store.episode_ids() == [] and not (store.root / "half").exists() and _leftovers(store) == []


def _stored(store, eid="vid"):
    store.write(synthetic_episode(eid, num_frames=10, size=32))
    return store.root / eid / "videos" / "base_camera.mp4"


def test_undecodable_video_names_episode_and_file(store):
    video = _stored(store)
    video.write_bytes(b"\x00not a video" * 64)
    with pytest.raises(EpisodeError) as err:
        store.validate("vid")
    assert err.value.episode_id == "vid" and err.value.path == str(video)
    with pytest.raises(EpisodeError, match="vid"):
        store.read_frames("vid")


def test_truncated_video_names_episode_and_file(store):
    video = _stored(store)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeError) as err:
        store.validate("vid")
    assert err.value.episode_id == "vid" and err.value.path == str(video)


def test_frame_count_disagreeing_with_table_on_disk(store):
    _stored(store)
    steps_path = store.root / "vid" / "steps.parquet"
    meta_path = store.root / "vid" / "meta.json"
    steps = pq.read_table(steps_path).to_pandas().iloc[:7]
    pq.write_table(pq.read_table(steps_path).slice(0, 7), steps_path)
    meta = json.loads(meta_path.read_text())
    meta["num_frames"] = len(steps)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(EpisodeError, match="frames") as err:
        store.validate("vid")
    assert err.value.episode_id == "vid" and "base_camera.mp4" in err.value.path


def test_duplicate_episode_ids_are_rejected(store):
    store.write(synthetic_episode("dup", num_frames=6, size=32))
    with pytest.raises(EpisodeError, match="duplicate") as err:
        store.write(synthetic_episode("dup", num_frames=6, size=32, seed=1), overwrite=False)
    assert err.value.episode_id == "dup"
    with pytest.raises(EpisodeError, match="duplicate") as err:
        validate_index(pd.DataFrame({"episode_id": ["a", "dup", "dup"]}))
    assert err.value.episode_id == "dup"


def test_copied_episode_folder_is_caught(store):
    store.write(synthetic_episode("orig", num_frames=6, size=32))
    shutil.copytree(store.root / "orig", store.root / "copy")
    with pytest.raises(EpisodeError, match="orig"):
        store.validate("copy")
