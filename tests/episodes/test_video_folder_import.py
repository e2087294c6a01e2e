"""Importing a folder of real videos (H.264, AV1, HEVC, rotated, odd-sized, variable frame rate, broken)."""
from __future__ import annotations

import numpy as np
import pytest
from media_helpers import frame_levels, level_frames, write_video

from rla_pipeline.episodes.format import EpisodeError, EpisodeStore
from rla_pipeline.episodes.sources.video_decode import decode_upright, resample_times
from rla_pipeline.episodes.sources.video_folder import import_video_folder, video_episode_id

LEVELS = [20, 60, 100, 140, 180, 220]


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "clips"
    write_video(root / "PushCube-v1" / "plain.mp4", level_frames(LEVELS, 48, 64))
    write_video(root / "PushCube-v1" / "phone_portrait.mov", level_frames(LEVELS, 48, 64), rotation=-90)
    write_video(root / "PullCube-v1" / "odd size.mkv", level_frames(LEVELS, 47, 63))
    write_video(root / "PullCube-v1" / "lerobot_av1.mp4", level_frames(LEVELS, 48, 64), codec="libsvtav1")
    (root / "notes.txt").write_text("not a video")
    return root


def test_imports_every_video_upright_resized_with_tasks_from_subfolders(folder, tmp_path):
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_video_folder({"path": str(folder), "image_size": 32, "name": "clips"}, store)
    assert len(rows) == 4 and set(rows["status"]) == {"written"} and rows["kept"].all()
    assert sorted(store.episode_ids()) == sorted(rows["episode_id"])
    for r in rows.to_dict("records"):
        meta = store.read_meta(r["episode_id"])
        assert meta.source == "video_folder" and meta.kind == "actionless" and meta.action_dim is None
        assert meta.task == ("PushCube-v1" if "PushCube" in r["path"] else "PullCube-v1")
        assert (meta.height, meta.width, meta.num_frames) == (32, 32, 6)
        assert meta.fps == pytest.approx(10.0)
        frames = store.read_frames(r["episode_id"])
        np.testing.assert_allclose(frame_levels(frames), LEVELS, atol=6)  # every frame, in order
        steps = store.read_steps(r["episode_id"])
        assert steps["action"].isna().all() and steps["proprio"].isna().all()
        np.testing.assert_allclose(steps["timestamp"], np.arange(6) / 10.0, atol=1e-3)
    codecs = {store.read_meta(e).extra["codec"] for e in store.episode_ids()}
    assert {"h264", "libdav1d"} <= codecs or {"h264", "av1"} <= codecs


def test_rotated_phone_video_is_turned_upright(folder, tmp_path):
    store = EpisodeStore(tmp_path / "episodes")
    import_video_folder({"path": str(folder), "image_size": 32, "name": "clips"}, store)
    eid = video_episode_id("clips", "PushCube-v1/phone_portrait.mov")
    assert store.read_meta(eid).extra["rotation"] == -90
    frame = store.read_frames(eid)[0].astype(int)
    # stored landscape with a white top-left quadrant; display matrix -90 (turn clockwise) -> white top-right
    assert frame[2:12, 22:30].mean() > 230 and frame[2:12, 2:10].mean() < 100 and frame[22:30, 22:30].mean() < 100


def test_rerun_skips_unchanged_and_reimports_changed_file(folder, tmp_path):
    store = EpisodeStore(tmp_path / "episodes")
    cfg = {"path": str(folder), "image_size": 32, "name": "clips"}
    import_video_folder(cfg, store)
    eid = video_episode_id("clips", "PushCube-v1/plain.mp4")
    mtime = (store.root / eid / "meta.json").stat().st_mtime_ns
    again = import_video_folder(cfg, store)
    assert set(again["status"]) == {"exists"}
    assert (store.root / eid / "meta.json").stat().st_mtime_ns == mtime
    write_video(folder / "PushCube-v1" / "plain.mp4", level_frames(LEVELS[:4], 48, 64))
    third = import_video_folder(cfg, store)
    assert third.set_index("episode_id").loc[eid, "status"] == "written"
    assert (third["status"] == "exists").sum() == 3 and store.read_meta(eid).num_frames == 4


def test_variable_frame_rate_uses_pts_and_resamples(tmp_path):
    times = [0.0, 0.04, 0.1, 0.21, 0.3, 0.32, 0.41, 0.5]
    video = write_video(tmp_path / "vfr" / "clip.mp4", level_frames([20 * (i + 1) for i in range(8)]), fps=30, times=times)
    dec = decode_upright(video, 32)
    np.testing.assert_allclose(dec.times, times, atol=2e-3)
    assert resample_times(dec.times, 10.0).tolist() == [0, 2, 3, 4, 6, 7]
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_video_folder({"path": str(tmp_path / "vfr"), "image_size": 32, "fps": 10, "task": "T"}, store)
    steps = store.read_steps(rows.loc[0, "episode_id"])
    np.testing.assert_allclose(steps["timestamp"], [0.0, 0.1, 0.21, 0.3, 0.41, 0.5], atol=2e-3)
    assert store.read_meta(rows.loc[0, "episode_id"]).task == "T"


def test_hevc_video_is_read(tmp_path):
    write_video(tmp_path / "hevc" / "clip.mp4", level_frames(LEVELS, 48, 64), codec="libx265")
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_video_folder({"path": str(tmp_path / "hevc"), "image_size": 32}, store)
    np.testing.assert_allclose(frame_levels(store.read_frames(rows.loc[0, "episode_id"])), LEVELS, atol=8)


def _broken_folder(tmp_path):
    root = tmp_path / "broken"
    write_video(root / "ok.mp4", level_frames(LEVELS))
    (root / "garbage.mp4").write_bytes(b"\x00\x01 not a video " * 100)
    data = write_video(root / "cut.mp4", level_frames(LEVELS * 4)).read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    return root


def test_bad_file_raises_episode_error_naming_the_file(tmp_path):
    root = _broken_folder(tmp_path)
    store = EpisodeStore(tmp_path / "episodes")
    with pytest.raises(EpisodeError) as err:
        import_video_folder({"path": str(root), "image_size": 32}, store)
    assert err.value.path.endswith(("cut.mp4", "garbage.mp4")) and err.value.episode_id.startswith("broken-")
    assert err.value.path in str(err.value)


def test_truncated_faststart_file_is_detected(tmp_path):
    """moov atom first (web/phone "fast start"): the file opens, but frames are missing at the end."""
    import av

    src = write_video(tmp_path / "src.mp4", level_frames(list(range(10, 250, 4)), 96, 128))
    out = tmp_path / "fs" / "clip.mp4"
    out.parent.mkdir()
    with av.open(str(src)) as inp, av.open(str(out), "w", options={"movflags": "faststart"}) as o:
        s = o.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = s
                o.mux(packet)
    data = out.read_bytes()
    out.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(EpisodeError, match="truncated video: decoded") as err:
        import_video_folder({"path": str(out.parent), "image_size": 32}, EpisodeStore(tmp_path / "episodes"))
    assert err.value.path == str(out)


def test_skip_bad_records_reason_and_continues(tmp_path):
    root = _broken_folder(tmp_path)
    store = EpisodeStore(tmp_path / "episodes")
    rows = import_video_folder({"path": str(root), "image_size": 32, "skip_bad": True}, store)
    by_file = rows.set_index(rows["path"].str.rsplit("/", n=1).str[-1])
    assert by_file.loc["ok.mp4", "status"] == "written"
    for name in ("garbage.mp4", "cut.mp4"):
        assert by_file.loc[name, "status"] == "skipped" and not by_file.loc[name, "kept"]
        assert by_file.loc[name, "reason"]
    assert store.episode_ids() == [by_file.loc["ok.mp4", "episode_id"]]
