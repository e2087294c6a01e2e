"""Your own data, no simulator, as a user runs it: `kedro run --pipelines=world_model_from_data` at test sizes.

Two LeRobot v3.0 datasets of two robots whose action widths differ (7-d and 4-d; LeRobot's layout, several
episodes per parquet/mp4 file) and a folder of two mp4 phone clips go through import -> DINO cache -> RLA -> the
three world models -> their prediction evaluation -> the report, in a temporary data root with a copy of conf/
plus an environment that points `ingestion` at them with `run_simulation: false` (what a user writes in
conf/local). ManiSkill is never imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "episodes"))


def _conf(project_root: Path, tmp: Path, ingestion: dict) -> Path:
    """conf/ copied, plus env `owndata` = conf/test with the ingestion block pointed at the recordings."""
    conf = tmp / "conf"
    shutil.copytree(project_root / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    env = conf / "owndata"
    shutil.copytree(project_root / "conf" / "test", env)
    test_ing = yaml.safe_load((env / "parameters_ingestion.yml").read_text())["ingestion"]
    (env / "parameters_ingestion.yml").write_text(yaml.safe_dump({"ingestion": {**test_ing, **ingestion}}))
    return conf


@pytest.fixture(scope="module")
def own_data(tmp_path_factory, project_root):
    from media_helpers import level_frames, write_video

    from rla_pipeline.episodes.synthetic import write_lerobot_v3

    tmp = tmp_path_factory.mktemp("own")
    arm7 = write_lerobot_v3(tmp / "rec" / "arm7", n_episodes=4, frames=16, action_dim=7, robot="arm7",
                            episodes_per_file=2, size=32, seed=1)
    arm4 = write_lerobot_v3(tmp / "rec" / "arm4", n_episodes=4, frames=16, action_dim=4, robot="arm4",
                            episodes_per_file=4, size=32, seed=2)
    for i in range(2):
        write_video(tmp / "rec" / "phone" / "wipe" / f"clip{i}.mp4", level_frames([20 + 9 * t + i for t in range(14)]))
    conf = _conf(project_root, tmp, {
        "run_simulation": False,
        "lerobot_datasets": [{"path": str(arm7), "image_size": 32}, {"path": str(arm4), "image_size": 32}],
        "video_folders": [{"path": str(tmp / "rec" / "phone"), "image_size": 32}],
    })
    env = {**os.environ, "RLA_DATA_ROOT": str(tmp / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "KEDRO_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "2"}
    cmd = [str(BIN / "kedro"), "run", "--pipelines=world_model_from_data", "--env=owndata", f"--conf-source={conf}"]
    res = subprocess.run(cmd, cwd=project_root, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, f"kedro run failed:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
    return tmp / "data", res.stdout + res.stderr


def test_two_robots_and_videos_reach_the_world_model_report(own_data):
    data, log = own_data
    index = pd.read_parquet(data / "08_reporting" / "ingestion_summary.parquet")
    assert index["episodes"].sum() == 10 and set(index["kind"]) == {"demo", "actionless"}
    splits = pd.read_parquet(data / "05_model_input" / "episode_splits.parquet")
    assert "heldout_task" not in set(splits["split"])  # imported data: no held-out task by default
    val = splits[splits["split"] == "val"]["episode_id"]
    for robot in ("arm7", "arm4"):  # each robot keeps a labelled validation episode
        assert val.str.startswith(robot).any(), (robot, sorted(val))
    table = pd.read_parquet(data / "08_reporting" / "wm_prediction_table.parquet")
    assert {"rla_wm", "deterministic", "absolute_flow", "copy"} <= set(table["model"])
    assert set(table["horizon"]) == {2, 5, 10} and table["token_l1"].notna().all()
    assert set(table["robot"]) == {"arm7", "arm4"}  # one world model, evaluated per robot
    assert (data / "08_reporting" / "wm_prediction_plot.png").stat().st_size > 0
    html = (data / "08_reporting" / "report.html").read_text()
    assert "Future prediction" in html and "RLA autoencoder" in html
    assert "success tables not run" in log
    assert "mani_skill" not in log.lower()


def test_the_world_model_has_an_action_mlp_per_robot(own_data):
    from rla_pipeline.training.model_io import load_model

    data, _ = own_data
    for name in ("world_model", "wm_baseline_deterministic", "wm_baseline_absolute_flow"):
        m = load_model(data / "06_models" / f"{name}.safetensors")
        assert m.config.robots == {"arm4": 4, "arm7": 7} and m.config.action_dim == 7
        with pytest.raises(ValueError, match="no action encoder for robot"):
            m.robot_ids(["so100"])


@pytest.fixture(scope="module")
def sim_and_lerobot(tmp_path_factory, project_root):
    """ManiSkill PullCube-v1 episodes (Panda, real simulator, test sizes) + a LeRobot v3.0 dataset of another arm,
    through `world_model_from_data` with the paper's conditioning: joint positions (Panda qpos 9-d, the arm's
    2-d observation.state)."""
    from rla_pipeline.episodes.synthetic import write_lerobot_v3

    tmp = tmp_path_factory.mktemp("simlr")
    arm = write_lerobot_v3(tmp / "rec" / "arm", n_episodes=4, frames=16, action_dim=6, robot="lerobot_arm",
                           episodes_per_file=2, size=32, seed=3)
    # three Panda demos (two train, one val) and nothing else: the simulator is the slow part here
    conf = _conf(project_root, tmp, {"run_simulation": True,
                                     "simulation": {"image_size": 64, "demos_per_task": 3, "play_per_task": 0,
                                                    "actionless_per_task": 0, "max_steps": 40,
                                                    "extra_steps_after_success": 2},
                                     "lerobot_datasets": [{"path": str(arm), "image_size": 32}]})
    env_dir = conf / "owndata"
    (env_dir / "parameters.yml").write_text(yaml.safe_dump({"device": "cpu", "tasks": ["PullCube-v1"],
                                                            "checkpoint_root": None}))
    wm = yaml.safe_load((env_dir / "parameters_world_model.yml").read_text())
    wm["world_model"]["conditioning"] = "joint_positions"
    (env_dir / "parameters_world_model.yml").write_text(yaml.safe_dump(wm))
    env = {**os.environ, "RLA_DATA_ROOT": str(tmp / "data"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "KEDRO_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "2", "MS_SKIP_ASSET_DOWNLOAD_PROMPT": "1"}
    cmd = [str(BIN / "kedro"), "run", "--pipelines=world_model_from_data", "--env=owndata", f"--conf-source={conf}"]
    res = subprocess.run(cmd, cwd=project_root, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, f"kedro run failed:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
    return tmp / "data"


@pytest.mark.timeout(1800)  # the simulator + a kedro run; the subprocess has its own 1500 s limit
def test_one_world_model_over_a_maniskill_arm_and_a_lerobot_arm(sim_and_lerobot):
    import torch

    from rla_pipeline.training.model_io import load_model

    data = sim_and_lerobot
    index = pd.read_parquet(data / "02_intermediate" / "episode_index.parquet")
    assert {"panda", "lerobot_arm"} <= set(index["robot"])  # robot identity from the episodes' metadata
    table = pd.read_parquet(data / "08_reporting" / "wm_prediction_table.parquet")
    assert set(table["robot"]) == {"panda", "lerobot_arm"}  # one world model, evaluated on each arm
    assert table.loc[table.model != "copy", "token_l1"].notna().all()
    for name in ("world_model", "wm_baseline_deterministic", "wm_baseline_absolute_flow"):
        m = load_model(data / "06_models" / f"{name}.safetensors")
        # joint positions: Panda's 9-d qpos and the arm's 2-d state, each with its own action MLP
        assert m.config.conditioning == "joint_positions"
        assert m.config.robots == {"lerobot_arm": 2, "panda": 9} and m.config.action_dim == 9
        # per-robot normalisation: each robot's own statistics over its own columns, padding left at 0 / 1
        arm, panda = m.robots.index("lerobot_arm"), m.robots.index("panda")
        assert torch.all(m.robot_action_mean[arm, 2:] == 0) and torch.all(m.robot_action_std[arm, 2:] == 1)
        assert not torch.allclose(m.robot_action_mean[arm, :2], m.robot_action_mean[panda, :2])
        assert (m.robot_action_std[panda] > 0).all()
        with pytest.raises(ValueError, match=r"no action encoder for robot\(s\) \['so100'\]"):
            m.robot_ids(["so100"])
        s = torch.zeros(1, m.config.num_tokens, m.config.token_dim)
        with pytest.raises(ValueError, match="no action encoder for robot"):
            m.predict_next(s, torch.zeros(1, 3, 9), torch.ones(1, 3, dtype=torch.bool), robot="so100")
