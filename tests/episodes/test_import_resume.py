"""An interrupted LeRobot import resumes without redoing finished episodes (and a half-written one is redone)."""
from __future__ import annotations

import pytest


class Interrupted(Exception):
    pass


def test_a_resumed_import_does_not_redo_finished_episodes(tmp_path):
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.sources.lerobot import import_lerobot
    from rla_pipeline.episodes.synthetic import write_lerobot_v3

    ds = write_lerobot_v3(tmp_path / "ds", n_episodes=6, frames=5, episodes_per_file=4, size=16)
    store = EpisodeStore(tmp_path / "episodes")
    cfg = {"path": str(ds), "image_size": 16}

    def stop_after(n):
        def progress(items, desc=""):
            for i, item in enumerate(items):
                if i == n:
                    raise Interrupted  # like Ctrl-C / a killed job between two episodes
                yield item
        return progress

    with pytest.raises(Interrupted):
        import_lerobot(cfg, store, progress=stop_after(3))
    finished = store.episode_ids()
    assert len(finished) == 3
    stamps = {e: (store.episode_dir(e) / "meta.json").stat().st_mtime_ns for e in finished}
    out = import_lerobot(cfg, store).set_index("episode_id")
    assert (out.loc[finished, "status"] == "exists").all()  # not redone
    assert {e: (store.episode_dir(e) / "meta.json").stat().st_mtime_ns for e in finished} == stamps
    rest = sorted(set(out.index) - set(finished))
    assert len(rest) == 3 and (out.loc[rest, "status"] == "written").all()
    assert (import_lerobot(cfg, store)["status"] == "exists").all()  # a third run does nothing
