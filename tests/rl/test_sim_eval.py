"""A short real-simulator evaluation of untrained (trivial) policies: the loop, the row schema, seed hygiene."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy, TokenPolicy, TokenPolicyConfig
from rla_pipeline.rl.sim_eval import SimEvalConfig, check_disjoint_seeds, evaluate_in_sim

COLUMNS = {"policy", "task", "seed", "success", "steps", "seconds", "sim_seconds", "encode_seconds", "policy_calls"}


def test_eval_seeds_must_not_overlap_training_seeds():
    check_disjoint_seeds([10_000, 10_001], [0, 1, 2, None])
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint_seeds([3, 10_000], range(10))


@pytest.mark.sim
def test_image_and_token_policies_run_in_maniskill():
    torch.manual_seed(0)
    cfg = SimEvalConfig(image_size=64, max_steps=6, execute_steps=4)
    image_policy = BCResNetPolicy(BCResNetConfig(image_size=32, action_dim=4, chunk=4, hidden=16, num_tasks=1,
                                                 task_names=["PushCube-v1"]))
    df = evaluate_in_sim("image", image_policy, "PushCube-v1", n_episodes=1, seeds=[10_000], cfg=cfg, policy_name="bc")
    assert set(df.columns) == COLUMNS and len(df) == 1
    row = df.iloc[0]
    assert row["steps"] == 6 and row["policy_calls"] == 2 and row["seed"] == 10_000 and row["policy"] == "bc"

    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    enc = DinoEncoder(EncoderConfig(model_name="vit_small_patch14_dinov2.lvd142m", image_size=28, weights="random",
                                    device="cpu"))
    token_policy = TokenPolicy(TokenPolicyConfig(num_tokens=enc.num_tokens, token_dim=enc.token_dim, action_dim=4,
                                                 chunk=3, hidden=16))
    df = evaluate_in_sim("token", token_policy, "PushCube-v1", n_episodes=1, seeds=[10_001], cfg=cfg, encoder=enc)
    assert df.iloc[0]["steps"] == 6 and df.iloc[0]["policy_calls"] == 2 and df.iloc[0]["encode_seconds"] > 0
    with pytest.raises(ValueError, match="encoder"):
        evaluate_in_sim("token", token_policy, "PushCube-v1", n_episodes=1, seeds=[1], cfg=cfg)


class _ReplayPolicy:
    """Plays back a recorded action sequence chunk by chunk, whatever it sees (an oracle for the eval loop)."""

    def __init__(self, actions, chunk: int, executed: int | None = None):
        from types import SimpleNamespace

        self.actions, self.pos, self.advance = actions, 0, executed or chunk
        self.seen = {}  # step -> the frame the loop showed the policy there
        self.config = SimpleNamespace(chunk=chunk, action_dim=actions.shape[1], proprio_dim=0, num_tasks=0)

    def cpu(self):
        return self

    def eval(self):
        return self

    def act(self, obs, proprio=None, task=None):
        self.seen[self.pos] = obs[0].numpy().copy()
        out = self.actions[self.pos:self.pos + self.config.chunk]
        if len(out) < self.config.chunk:  # past the recording: hold still
            out = np.concatenate([out, np.zeros((self.config.chunk - len(out), self.actions.shape[1]), np.float32)])
        self.pos += self.advance  # the loop executes `advance` of each chunk, then asks again
        return torch.from_numpy(out)[None]


@pytest.mark.sim
def test_a_demo_s_stored_actions_replayed_through_the_evaluation_loop_succeed(tmp_path):
    """The trust check under Tables 2 and 3: the actions BC learns from (an ingested demo's stored actions, as
    episode_actions reads them) executed by evaluate_in_sim from the demo's seed reach the task's success, with
    chunks of 8 executed 4 at a time (receding horizon) too. A mismatch between the ingestion and evaluation envs
    (controller, seed handling, leftover state, success flag) would fail it; a policy that does nothing must not
    succeed from the same seed. And the frames the loop shows the policy are, bit for bit, the stored training
    frames of those steps (lossless storage, recipe 4; lossy yuv420p storage was ~4 grey levels off)."""
    from rla_pipeline.episodes.format import EpisodeStore, episode_actions
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig, simulate_episodes
    from rla_pipeline.sim import vulkan

    try:
        vulkan.ensure_vulkan()
    except vulkan.VulkanUnavailableError as exc:
        pytest.skip(str(exc))
    store = EpisodeStore(tmp_path / "episodes")
    sim = SimulationConfig(tasks=["PullCube-v1"], image_size=48, demos_per_task=1, actionless_per_task=0,
                           play_per_task=0, max_steps=50, extra_steps_after_success=0)
    demo = simulate_episodes(sim, "demo", store, progress=False)
    eid = demo.loc[demo["kept"], "episode_id"].item()
    meta = store.read_meta(eid)
    actions = episode_actions(store.read_steps(eid))[:-1]  # the last row is the never-executed hold action
    cfg = SimEvalConfig(image_size=48, control_mode=sim.control_mode, max_steps=50)
    stored = store.read_frames(eid)
    for execute in (None, 4):
        cfg.execute_steps = execute
        replay = _ReplayPolicy(actions, 8, execute)
        row = evaluate_in_sim("image", replay, "PullCube-v1", 1, [meta.seed], cfg).iloc[0]
        assert row["success"], (execute, row.to_dict())
        assert row["steps"] <= len(actions)
        assert len(replay.seen) >= 2 and all(np.array_equal(f, stored[t]) for t, f in replay.seen.items())
    still = evaluate_in_sim("image", _ReplayPolicy(np.zeros_like(actions), chunk=8), "PullCube-v1", 1, [meta.seed],
                            cfg).iloc[0]
    assert not still["success"]


def test_evaluation_step_limits_default_to_the_demos_and_enter_the_sim_digest(monkeypatch):
    """evaluation.sim.max_steps null = each task's demo limit (sim.envs.TASK_MAX_STEPS), not ManiSkill's registered
    one; any change of a limit (config or table) changes sim_digest, so Table 3 never reuses Table 2's rows then."""
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig
    from rla_pipeline.sim import envs
    from rla_pipeline.stages.evaluation import sim_digest

    cfg = SimEvalConfig()
    demos = SimulationConfig()
    assert {t: cfg.steps_for(t) for t in envs.TASK_MAX_STEPS} == {t: demos.steps_for(t) for t in envs.TASK_MAX_STEPS}
    assert cfg.steps_for("PushT-v1") == 300 and cfg.steps_for("PullCube-v1") == 50
    assert SimEvalConfig(max_steps=6).steps_for("PushT-v1") == 6
    assert SimEvalConfig.from_dict({"task_max_steps": {"PushT-v1": 200}}).steps_for("PushT-v1") == 200
    with pytest.raises(ValueError, match="task_max_steps"):
        SimEvalConfig(task_max_steps={"PushT-v1": 0})
    base = sim_digest(cfg)
    assert sim_digest(SimEvalConfig(workers=3)) == base
    assert sim_digest(SimEvalConfig(task_max_steps={"PushT-v1": 200})) != base
    assert sim_digest(SimEvalConfig(max_steps=100)) != base
    monkeypatch.setitem(envs.TASK_MAX_STEPS, "PushT-v1", 250)
    assert sim_digest(cfg) != base  # the table the unset limits come from


@pytest.mark.sim
def test_a_failing_evaluation_episode_runs_the_task_s_demo_limit():
    """RollBall-v1 is registered with 80 steps, its demos get 100 (the throw succeeds after 55-85 steps): a policy
    that does nothing is evaluated for the demos' 100 steps, not cut at ManiSkill's 80."""
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig

    limit = SimulationConfig().steps_for("RollBall-v1")
    assert limit == 100
    still = _ReplayPolicy(np.zeros((1, 4), np.float32), chunk=8)
    row = evaluate_in_sim("image", still, "RollBall-v1", 1, [10_000], SimEvalConfig(image_size=32, with_mask=False)
                          ).iloc[0]
    assert not row["success"] and row["steps"] == limit, row.to_dict()


def test_an_evaluation_limit_shorter_than_the_demos_is_warned_about(caplog):
    import logging

    import pandas as pd

    from rla_pipeline.stages.evaluation import EvaluationConfig, sim_config

    index = pd.DataFrame({"task": ["PushT-v1", "PushT-v1", "PullCube-v1"], "kind": ["demo"] * 3,
                          "num_frames": [120, 201, 40], "height": [64] * 3, "control_mode": ["pd_ee_delta_pos"] * 3})
    with caplog.at_level(logging.WARNING, logger="rla_pipeline.stages.evaluation"):
        sim_config(EvaluationConfig.from_dict({}), index, ["PushT-v1", "PullCube-v1"])
    assert not caplog.records  # the default limits (300, 50) cover the demos
    with caplog.at_level(logging.WARNING, logger="rla_pipeline.stages.evaluation"):
        scfg = sim_config(EvaluationConfig.from_dict({"sim": {"max_steps": 100}}), index, ["PushT-v1", "PullCube-v1"])
    assert scfg.steps_for("PushT-v1") == 100
    assert [r.getMessage() for r in caplog.records] == [
        "PushT-v1: evaluation episodes stop after 100 steps, the longest demo took 200 actions "
        "(evaluation.sim.max_steps / task_max_steps)"]
