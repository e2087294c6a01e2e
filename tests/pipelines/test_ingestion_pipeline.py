"""The ingestion pipeline through Kedro's API on real videos made from synthetic episodes (no simulator)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rla_pipeline.episodes.format import EpisodeError, EpisodeStore
from rla_pipeline.episodes.synthetic import synthetic_episode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "episodes"))
from media_helpers import make_lerobot_v3, write_video  # noqa: E402


def _video_folder(root: Path) -> Path:
    """Two task sub-folders of mp4s rendered by the synthetic pusher (actionless clips)."""
    for task in ("SyntheticPush-v0", "SyntheticPull-v0"):
        for i in range(2):
            ep = synthetic_episode(f"{task}-{i}", task=task, kind="actionless", num_frames=8, size=48, seed=i)
            write_video(root / task / f"clip{i}.mp4", ep.frames["base_camera"], fps=20)
    return root


def _params(tmp_path, **extra):
    return {
        "run_simulation": False,
        "simulation": {},
        "video_folders": [{"path": str(_video_folder(tmp_path / "clips")), "image_size": 32, "name": "clips"}],
        "lerobot_datasets": [{"path": str(make_lerobot_v3(tmp_path / "lr", (5, 4))), "image_size": 32, "task": "LeRobotPush"}],
        "skip_bad_episodes": False,
        "validate_decode": "new",
        **extra,
    }


def _run(store_root: Path, ingestion: dict):
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from rla_pipeline.datasets.episode_store import EpisodeStoreDataset
    from rla_pipeline.pipelines.ingestion import create_pipeline

    catalog = DataCatalog(
        {
            "episodes": EpisodeStoreDataset(str(store_root)),
            "params:ingestion": MemoryDataset(ingestion),
            "params:tasks": MemoryDataset(["PushCube-v1"]),
            "params:seed": MemoryDataset(0),
            **{name: MemoryDataset() for name in ("episode_index", "ingestion_summary", "skipped_episodes")},
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return {name: catalog.load(name) for name in ("episode_index", "ingestion_summary", "skipped_episodes")}


def test_pipeline_builds_index_summary_and_reruns_without_work(tmp_path):
    params = _params(tmp_path)
    out = _run(tmp_path / "episodes", params)
    index, summary, skipped = out["episode_index"], out["ingestion_summary"], out["skipped_episodes"]
    assert len(index) == 6 and index["episode_id"].is_unique and len(skipped) == 0
    assert set(index["source"]) == {"video_folder", "lerobot"}
    s = summary.set_index(["task", "kind"])
    assert s.loc[("SyntheticPush-v0", "actionless"), "episodes"] == 2
    assert s.loc[("SyntheticPush-v0", "actionless"), "frames"] == 16
    assert s.loc[("LeRobotPush", "demo"), "frames"] == 9 and s.loc[("LeRobotPush", "demo"), "attempted"] == 2
    assert list(summary.columns) == ["task", "kind", "episodes", "frames", "successes", "attempted",
                                     "demo_success_rate", "skipped"]

    store = EpisodeStore(tmp_path / "episodes")
    stamps = {e: (store.root / e / "meta.json").stat().st_mtime_ns for e in store.episode_ids()}
    again = _run(tmp_path / "episodes", params)
    pd.testing.assert_frame_equal(again["episode_index"].drop(columns=["path"]), index.drop(columns=["path"]))
    assert {e: (store.root / e / "meta.json").stat().st_mtime_ns for e in store.episode_ids()} == stamps


def test_bad_episode_stops_the_run_or_is_skipped_and_listed(tmp_path):
    params = _params(tmp_path)
    _run(tmp_path / "episodes", params)
    store = EpisodeStore(tmp_path / "episodes")
    victim = next(e for e in store.episode_ids() if e.startswith("clips-SyntheticPull-v0__clip0-"))
    video = store.video_path(victim)
    video.write_bytes(video.read_bytes()[:200])  # the stored copy got corrupted after import
    params["validate_decode"] = "all"
    with pytest.raises(EpisodeError) as err:
        _run(tmp_path / "episodes", params)
    assert err.value.episode_id == victim and err.value.path == str(video)

    params["skip_bad_episodes"] = True
    out = _run(tmp_path / "episodes", params)
    assert victim not in set(out["episode_index"]["episode_id"]) and len(out["episode_index"]) == 5
    skipped = out["skipped_episodes"]
    assert skipped["episode_id"].tolist() == [victim] and skipped.loc[0, "path"] == video.relative_to(store.root).as_posix()  # store-relative
    assert skipped.loc[0, "reason"]
    s = out["ingestion_summary"].set_index(["task", "kind"])
    assert s.loc[("SyntheticPull-v0", "actionless"), "skipped"] == 1


def test_duplicate_episode_ids_across_sources_are_rejected(tmp_path):
    params = _params(tmp_path)
    params["video_folders"] = params["video_folders"] * 2  # the same folder listed twice -> same ids
    with pytest.raises(EpisodeError, match="duplicate"):
        _run(tmp_path / "episodes", params)


def test_failed_sim_attempts_count_in_demo_success_rate():
    from rla_pipeline.episodes.sources.index import combine_source_rows, ingestion_summary, summary_metrics

    rows = combine_source_rows([pd.DataFrame({
        "episode_id": ["d0", "d1", "d2", "d3"], "task": "PushCube-v1", "kind": "demo", "seed": [0, 1, 2, 3],
        "success": [True, False, True, True], "kept": [True, False, True, True],
        "reason": ["", "expert failed", "", ""], "num_frames": [20, 0, 18, 22],
    })])
    index = pd.DataFrame({"episode_id": ["d0", "d2", "d3"], "task": "PushCube-v1", "kind": "demo",
                          "num_frames": [20, 18, 22], "success": True})
    skipped = pd.DataFrame({"episode_id": ["d1"], "task": ["PushCube-v1"], "kind": ["demo"], "source": ["maniskill"],
                            "path": [""], "reason": ["expert failed"]})
    summary = ingestion_summary(index, rows, skipped)
    r = summary.iloc[0]
    assert (r.episodes, r.frames, r.successes, r.attempted, r.skipped) == (3, 60, 3, 4, 1)
    assert r.demo_success_rate == pytest.approx(0.75)
    assert summary_metrics(summary)["demo_success_rate.PushCube-v1"] == pytest.approx(0.75)



def test_demos_without_a_recorded_outcome_have_an_unknown_success_rate():
    """A LeRobot dataset without ``next.success``: EpisodeMeta.success is None (unknown), the rate NaN, not 0.0."""
    from rla_pipeline.episodes.sources.index import combine_source_rows, ingestion_summary, summary_metrics

    rows = combine_source_rows([pd.DataFrame({
        "episode_id": ["lr-ep0", "lr-ep1"], "task": "LeRobotPush", "kind": "demo", "source": "lerobot",
        "success": [None, None], "kept": True, "status": "written", "num_frames": [5, 4],
    })])
    index = pd.DataFrame({"episode_id": ["lr-ep0", "lr-ep1"], "task": "LeRobotPush", "kind": "demo",
                          "num_frames": [5, 4], "success": pd.array([None, None], dtype="boolean")})
    skipped = pd.DataFrame(columns=["episode_id", "task", "kind", "source", "path", "reason"])
    summary = ingestion_summary(index, rows, skipped)
    assert np.isnan(summary.iloc[0].demo_success_rate)
    assert not any(k.startswith("demo_success_rate") for k in summary_metrics(summary))


def test_demo_success_rate_counts_recorded_outcomes_and_reads_unchanged_episodes_from_the_index():
    """Rows of unchanged imported episodes ("exists") carry no outcome: the stored metadata gives it; an episode
    whose outcome nobody recorded counts in neither the successes nor the attempts of the rate."""
    from rla_pipeline.episodes.sources.index import combine_source_rows, ingestion_summary

    rows = combine_source_rows([pd.DataFrame({
        "episode_id": ["a", "b", "c", "d"], "task": "T", "kind": "demo", "source": "lerobot",
        "success": [None, None, False, None], "kept": True, "status": ["exists", "exists", "written", "written"],
        "num_frames": [5, 5, 5, 5],
    })])
    index = pd.DataFrame({"episode_id": ["a", "b", "c", "d"], "task": "T", "kind": "demo", "num_frames": [5] * 4,
                          "success": pd.array([True, True, False, None], dtype="boolean")})
    skipped = pd.DataFrame(columns=["episode_id", "task", "kind", "source", "path", "reason"])
    r = ingestion_summary(index, rows, skipped).iloc[0]
    assert r.attempted == 4 and r.demo_success_rate == pytest.approx(2 / 3)


def test_kedro_session_writes_reporting_tables_and_logs_mlflow(tmp_path, monkeypatch, mlflow_uri, project_root):
    """`kedro run --pipelines=ingestion --env=test` through KedroSession with the project's catalog and hooks."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from mlflow import MlflowClient

    monkeypatch.setenv("RLA_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.chdir(project_root)
    bootstrap_project(project_root)
    params = _params(tmp_path)
    with KedroSession.create(project_path=project_root, env="test", runtime_params={"ingestion": params}) as session:
        session.run(pipeline_names=["ingestion"])
    summary = pd.read_parquet(tmp_path / "data" / "08_reporting" / "ingestion_summary.parquet")
    skipped = pd.read_parquet(tmp_path / "data" / "08_reporting" / "skipped_episodes.parquet")
    index = pd.read_parquet(tmp_path / "data" / "02_intermediate" / "episode_index.parquet")
    assert len(index) == 6 and summary["episodes"].sum() == 6 and len(skipped) == 0
    assert len(EpisodeStore(tmp_path / "data" / "01_raw" / "episodes").episode_ids()) == 6
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    assert metrics["ingestion.episodes.total"] == 6 and metrics["ingestion.frames.total"] == 16 * 2 + 9
    assert np.isfinite(metrics["ingestion.frames.actionless.SyntheticPush-v0"])


@pytest.mark.sim
@pytest.mark.slow
def test_kedro_session_with_the_simulator(tmp_path, monkeypatch, mlflow_uri, project_root):
    """The test-scale simulation (conf/test: one task, a couple of short episodes per kind) end to end."""
    pytest.importorskip("rla_pipeline.episodes.sources.maniskill")
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    monkeypatch.setenv("RLA_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.chdir(project_root)
    bootstrap_project(project_root)
    with KedroSession.create(project_path=project_root, env="test") as session:
        session.run(pipeline_names=["ingestion"])
    index = pd.read_parquet(tmp_path / "data" / "02_intermediate" / "episode_index.parquet")
    summary = pd.read_parquet(tmp_path / "data" / "08_reporting" / "ingestion_summary.parquet")
    assert set(index["source"]) == {"maniskill"} and set(index["task"]) == {"PushCube-v1"}
    assert "play" in set(index["kind"])
    # every kind was attempted; failed expert attempts are counted, not stored
    s = summary.set_index("kind")
    assert {"demo", "play", "actionless"} <= set(s.index) and (s["attempted"] >= 1).all()
    assert (s["attempted"] >= s["episodes"]).all() and 0.0 <= s.loc["demo", "demo_success_rate"] <= 1.0
    assert index.loc[index["kind"] == "actionless", "action_dim"].isna().all()
    # a second run does no work: every episode is left untouched
    store = EpisodeStore(tmp_path / "data" / "01_raw" / "episodes")
    stamps = {e: (store.root / e / "meta.json").stat().st_mtime_ns for e in store.episode_ids()}
    with KedroSession.create(project_path=project_root, env="test") as session:
        session.run(pipeline_names=["ingestion"])
    assert {e: (store.root / e / "meta.json").stat().st_mtime_ns for e in store.episode_ids()} == stamps
