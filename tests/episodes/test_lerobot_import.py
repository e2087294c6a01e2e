"""Importing LeRobot datasets: v3.0 (many episodes per parquet/mp4) and v2.1 (one file per episode)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from media_helpers import TASKS, episode_levels, frame_levels, make_lerobot_v3, make_lerobot_v21

from rla_pipeline.episodes.format import EpisodeError, EpisodeStore, episode_actions, episode_proprio
from rla_pipeline.episodes.sources.lerobot import LeRobotDataset, import_lerobot

LENGTHS = (6, 5)


@pytest.fixture(scope="module")
def v3_av1(tmp_path_factory):
    return make_lerobot_v3(tmp_path_factory.mktemp("lr") / "so100_push", LENGTHS, codec="libsvtav1")


def _check_frames_and_steps(store, rows, lengths, with_actions):
    levels = episode_levels(lengths)
    for e, r in enumerate(rows.sort_values("episode_id").to_dict("records")):
        eid = r["episode_id"]
        meta = store.read_meta(eid)
        assert meta.source == "lerobot" and meta.num_frames == lengths[e] and meta.fps == 10
        assert meta.task == TASKS[e % 2] and meta.cameras == ["front"] and meta.robot == "so100"
        # the right slice of the concatenated video: frame f of episode e carries its own grey level
        np.testing.assert_allclose(frame_levels(store.read_frames(eid)), levels[e], atol=6)
        steps = store.read_steps(eid)
        np.testing.assert_allclose(steps["timestamp"], np.arange(lengths[e]) / 10, atol=1e-6)
        if with_actions:
            assert meta.kind == "demo" and meta.action_dim == 3 and meta.proprio_dim == 2
            expected = np.stack([[e, f, 0.5] for f in range(lengths[e])]).astype(np.float32)
            np.testing.assert_array_equal(episode_actions(steps), expected)
            np.testing.assert_array_equal(episode_proprio(steps)[:, 1], np.arange(lengths[e]))
        else:
            assert meta.kind == "actionless" and meta.action_dim is None
            assert episode_actions(steps) is None and episode_proprio(steps) is None
        store.validate(eid)


def test_v3_concatenated_av1_with_actions(v3_av1, tmp_path):
    ds = LeRobotDataset(v3_av1)
    assert ds.is_v3 and ds.video_keys == ["observation.images.front"]
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_lerobot({"path": str(v3_av1), "image_size": 32}, store)
    assert rows["episode_id"].tolist() == ["so100_push-ep000000", "so100_push-ep000001"]
    assert set(rows["status"]) == {"written"}
    _check_frames_and_steps(store, rows, LENGTHS, with_actions=True)
    assert import_lerobot({"path": str(v3_av1), "image_size": 32}, store)["status"].tolist() == ["exists"] * 2


def test_v3_without_actions(v3_av1, tmp_path):
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_lerobot({"path": str(v3_av1), "image_size": 32, "use_actions": False, "name": "noact",
                           "cameras": ["front"]}, store)
    _check_frames_and_steps(store, rows, LENGTHS, with_actions=False)


def test_v3_h264_subset_of_episodes(tmp_path):
    root = make_lerobot_v3(tmp_path / "h264ds", (4, 7, 3), codec="libx264")
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_lerobot({"path": str(root), "image_size": 32, "episodes": [1, 2]}, store)
    assert rows["episode_id"].tolist() == ["h264ds-ep000001", "h264ds-ep000002"]
    levels = episode_levels((4, 7, 3))
    for eid, lv in zip(rows["episode_id"], levels[1:]):
        np.testing.assert_allclose(frame_levels(store.read_frames(eid)), lv, atol=6)


def test_v21_one_file_per_episode(tmp_path):
    root = make_lerobot_v21(tmp_path / "old", (4, 5))
    assert not LeRobotDataset(root).is_v3
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_lerobot({"path": str(root), "image_size": 32}, store)
    _check_frames_and_steps(store, rows, (4, 5), with_actions=True)


def test_row_count_disagreeing_with_metadata_is_an_error(tmp_path):
    root = make_lerobot_v3(tmp_path / "ds", LENGTHS)
    meta_file = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    eps = pd.read_parquet(meta_file)
    eps.loc[1, "length"] = 9
    eps.to_parquet(meta_file, index=False)
    with pytest.raises(EpisodeError, match="length 9") as err:
        import_lerobot({"path": str(root), "image_size": 32}, EpisodeStore(tmp_path / "episodes"))
    assert err.value.episode_id == "ds-ep000001" and err.value.path.endswith("file-000.parquet")


def test_video_shorter_than_table_is_an_error(tmp_path):
    """Rows whose timestamps point past the end of the concatenated video (a truncated or wrong mp4)."""
    root = make_lerobot_v3(tmp_path / "ds", LENGTHS)
    data_file = root / "data" / "chunk-000" / "file-000.parquet"
    data = pd.read_parquet(data_file)
    data.loc[data["episode_index"] == 1, "timestamp"] += np.float32(3.0)
    data.to_parquet(data_file, index=False)
    store = EpisodeStore(tmp_path / "episodes")
    with pytest.raises(EpisodeError, match="no frame") as err:
        import_lerobot({"path": str(root), "image_size": 32}, store)
    assert err.value.episode_id == "ds-ep000001" and err.value.path.endswith("file-000.mp4")
    rows = import_lerobot({"path": str(root), "image_size": 32, "skip_bad": True}, store)
    # episode 0 was stored before episode 1 failed (each episode is atomic): now it is left alone
    assert rows["status"].tolist() == ["exists", "skipped"] and "file-000.mp4" in rows.loc[1, "reason"]
    assert store.episode_ids() == ["ds-ep000000"]


def test_nan_actions_are_an_error_naming_the_parquet(tmp_path):
    root = make_lerobot_v3(tmp_path / "ds", LENGTHS, nan_action_episode=0)
    with pytest.raises(EpisodeError, match="NaN") as err:
        import_lerobot({"path": str(root), "image_size": 32}, EpisodeStore(tmp_path / "episodes"))
    assert err.value.episode_id == "ds-ep000000" and err.value.path.endswith("file-000.parquet")


def test_unknown_camera_and_version_are_config_errors(tmp_path):
    root = make_lerobot_v3(tmp_path / "ds", LENGTHS)
    with pytest.raises(ValueError, match="not a video key"):
        import_lerobot({"path": str(root), "cameras": ["wrist"]}, EpisodeStore(tmp_path / "e"))
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v1.6"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="unsupported LeRobot"):
        import_lerobot({"path": str(root)}, EpisodeStore(tmp_path / "e"))
