"""ImaginedVectorEnv: API and shapes over the real RLA world model, exact rewards, resets, calibration."""
from __future__ import annotations

import pytest
import torch

from rla_pipeline.rl.imagined_env import (
    ImaginedEnvConfig,
    ImaginedVectorEnv,
    build_start_states,
    calibrate_success_threshold,
)


class ShiftWorldModel(torch.nn.Module):
    """A real (tiny, exact) predictor: s' = s + mean over the chunk of (actions @ W), same shift for every token."""

    def __init__(self, action_dim: int, token_dim: int, gain: float = 1.0):
        super().__init__()
        self.W = gain * torch.eye(action_dim, token_dim)

    def predict_next(self, s_t, actions, action_mask, generator=None):
        shift = (actions * action_mask[..., None]).mean(1) @ self.W  # (B, D)
        return s_t + shift[:, None, :]


def _tiny_rla_world_model(N=4, D=8, A=3):
    from rla_pipeline.models.rla import RLAConfig
    from rla_pipeline.models.world_model import RLAWorldModel, WorldModelConfig

    rla = RLAConfig(num_tokens=N, token_dim=D, width=16, enc_depth=1, dec_depth=1, heads=2, latent_tokens=2, latent_dim=4)
    cfg = WorldModelConfig(num_tokens=N, token_dim=D, action_dim=A, max_actions=8, width=16, cond_depth=1,
                           flow_depth=1, heads=2, sample_steps=2, rla=rla)
    return RLAWorldModel(cfg).eval()


def test_api_and_shapes_with_real_rla_world_model():
    torch.manual_seed(0)
    N, D, A, H, B = 4, 8, 3, 5, 6
    seqs = [torch.randn(20 + i, N, D) for i in range(3)]
    starts = build_start_states(seqs, chunk=H, max_chunks=3, task_index=[0, 1, 1])
    env = ImaginedVectorEnv(_tiny_rla_world_model(N, D, A), starts, cfg=ImaginedEnvConfig(
        num_envs=B, max_chunks=3, success_threshold=1e-9, reward_mode="corresponding"))
    obs, info = env.reset(seed=1)
    assert obs["tokens"].shape == (B, N, D) and obs["task"].shape == (B,)
    for _ in range(3):
        obs, reward, term, trunc, info = env.step(torch.zeros(B, H, A))
        assert obs["tokens"].shape == (B, N, D) and torch.isfinite(obs["tokens"]).all()
        assert reward.shape == term.shape == trunc.shape == (B,)
        assert info["final_obs"].shape == (B, N, D)
    assert bool(trunc.all()) and not bool(term.any())  # 3 chunks = max_chunks, threshold unreachable
    # after the same-step autoreset every env is back on a dataset start state
    assert all(any(torch.equal(t, s) for s in starts.tokens) for t in obs["tokens"])


def test_reward_is_exact_negative_token_l1_to_goal():
    N, D, A = 2, 3, 3
    start = torch.zeros(1, N, D)
    goal = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])  # mean |.| = 4/6
    env = ImaginedVectorEnv(ShiftWorldModel(A, D), start, goals=goal,
                            cfg=ImaginedEnvConfig(num_envs=2, max_chunks=4, success_threshold=0.1, reward_scale=2.0))
    env.reset(seed=0)
    a = torch.zeros(2, 4, A)
    a[1, :, 0] = 1.0  # env 1 moves every token by +1 on dim 0: |1-1|+|0-0|+|0-0| + |0-1|+|0|+|3| -> 4/6
    a[1, :, 2] = 0.5  # ... and +0.5 on dim 2: -> (0+0+0.5 + 1+0+2.5)/6 = 4/6 as well
    _, reward, term, trunc, info = env.step(a)
    assert torch.allclose(info["distance"], torch.tensor([4 / 6, 4 / 6]))
    assert torch.allclose(reward, torch.tensor([-2 * 4 / 6, -2 * 4 / 6]))
    assert not term.any() and not trunc.any()


def test_success_terminates_and_resets():
    N, D, A = 2, 3, 3
    start = torch.zeros(1, N, D)
    goal = torch.ones(1, N, D)
    env = ImaginedVectorEnv(ShiftWorldModel(A, D), start, goals=goal,
                            cfg=ImaginedEnvConfig(num_envs=2, max_chunks=5, success_threshold=0.01))
    env.reset(seed=0)
    a = torch.zeros(2, 2, A)
    a[0] = 1.0  # env 0 lands exactly on the goal
    obs, reward, term, trunc, info = env.step(a)
    assert term.tolist() == [True, False] and trunc.tolist() == [False, False]
    assert info["success"].tolist() == [True, False]
    assert torch.equal(info["final_obs"][0], goal[0]) and torch.equal(obs["tokens"][0], start[0])  # autoreset
    assert float(reward[0]) == 0.0


def test_corresponding_mode_scores_against_demo_frame_at_same_step():
    N, D, A, H = 1, 3, 3, 2
    seq = torch.arange(10, dtype=torch.float32)[:, None, None].expand(10, N, D).clone()  # frame t has value t
    starts = build_start_states([seq], chunk=H, max_chunks=3)
    assert starts.corresponding[0, :, 0, 0].tolist() == [2.0, 4.0, 6.0]
    env = ImaginedVectorEnv(ShiftWorldModel(A, D, gain=2.0), starts, cfg=ImaginedEnvConfig(
        num_envs=1, max_chunks=3, success_threshold=0.5, reward_mode="corresponding", terminate_on_success=False))
    env.reset(seed=0)
    for _ in range(2):  # moving +2 per chunk follows the demo exactly
        _, r, term, trunc, info = env.step(torch.full((1, H, A), 1.0))
        assert float(info["distance"][0]) == pytest.approx(0.0)
    _, r, term, trunc, info = env.step(torch.full((1, H, A), 5.0))  # clipped to 1: still on the demo
    assert float(info["distance"][0]) == pytest.approx(0.0) and bool(trunc[0])


def test_calibrated_threshold_is_quantile_of_last_chunk_distances():
    H = 2
    seqs = [torch.zeros(6, 1, 2) for _ in range(3)]
    for i, s in enumerate(seqs):
        s[-1] = float(i + 1)  # L1(frame T-1-H, frame T-1) = i + 1
    assert calibrate_success_threshold(seqs, chunk=H, quantile=0.5) == pytest.approx(2.0)
    assert calibrate_success_threshold(seqs, chunk=H, quantile=1.0) == pytest.approx(3.0)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        ImaginedEnvConfig(success_threshold=0.0)
    with pytest.raises(ValueError):
        ImaginedEnvConfig(success_threshold=0.1, reward_mode="dense")
    with pytest.raises(Exception, match="unknown"):
        ImaginedEnvConfig.from_dict({"success_threshold": 0.1, "bogus": 1})


class ConstantPolicy(torch.nn.Module):
    """The simplest real policy: the same (zero) chunk for every observation."""

    def __init__(self, chunk: int, action_dim: int):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(chunk=chunk, action_dim=action_dim, num_tasks=0)

    def action_mean(self, tokens, task=None):
        return torch.zeros(tokens.shape[0], self.config.chunk, self.config.action_dim)


def test_imagined_success_counts_one_episode_per_start_state():
    from rla_pipeline.rl.imagined_env import evaluate_start_states
    from rla_pipeline.rl.ppo import evaluate_imagined

    N, D, A, H = 2, 3, 3, 4
    starts = torch.randn(6, N, D)
    goals = starts.clone()
    goals[3:] += 5.0  # start states 0-2 are solved by the first (zero) chunk, 3-5 never
    env = ImaginedVectorEnv(ShiftWorldModel(A, D), starts, goals=goals, cfg=ImaginedEnvConfig(
        num_envs=4, max_chunks=5, success_threshold=0.1))
    policy = ConstantPolicy(H, A)
    r = evaluate_start_states(policy, env, seed=0)
    assert r["episodes"] == 6 and r["success_rate"] == pytest.approx(0.5)
    assert r["mean_return"] == pytest.approx(-(3 * 0.0 + 3 * 5 * 5.0) / 6)  # 5 chunks at L1 5 for the failures
    # the old count (first n finished episodes of self-resetting envs) over-weights the fast successes
    assert evaluate_imagined(policy, env, n_episodes=6, seed=0)["success_rate"] > 0.5


def test_execute_steps_masks_the_rest_of_the_chunk():
    N, D, A, H = 2, 3, 3, 4
    starts = torch.zeros(1, N, D)
    cfg = dict(num_envs=1, max_chunks=3, success_threshold=1e-9)
    a = torch.zeros(1, H, A)
    a[0, :2, 0] = 0.5
    tail = a.clone()
    tail[0, 2:, 0] = 1.0  # actions 3 and 4 of the chunk: not executed with execute_steps=2
    outs = []
    for chunk in (a, tail):
        env = ImaginedVectorEnv(ShiftWorldModel(A, D), starts, goals=starts, cfg=ImaginedEnvConfig(
            execute_steps=2, **cfg))
        env.reset(seed=0)
        outs.append(env.step(chunk)[0]["tokens"])
    assert torch.equal(outs[0], outs[1])
    env = ImaginedVectorEnv(ShiftWorldModel(A, D), starts, goals=starts, cfg=ImaginedEnvConfig(**cfg))
    env.reset(seed=0)
    assert not torch.equal(env.step(tail)[0]["tokens"], outs[0])  # the whole chunk runs by default


# ------------------------------------------------------------------ time limit per start state, from the demos
def _steps_to_truncation(env, start_index) -> list[int]:
    """Chunks each env runs before its first truncation, started from ``start_index`` (zero actions, no success)."""
    B = env.num_envs
    env.reset_to(torch.as_tensor(start_index), seed=0)
    first = [0] * B
    H, A = 8, 3
    for step in range(1, 100):
        _, _, term, trunc, _ = env.step(torch.zeros(B, H, A))
        assert not term.any()
        for i in range(B):
            if bool(trunc[i]) and not first[i]:
                first[i] = step
        if all(first):
            return first
    raise AssertionError(f"no truncation within 100 chunks: {first}")


def test_long_tasks_get_enough_chunks_to_reach_their_demos_last_frame():
    """Demos of 20 and 60 frames, 8 frames per chunk: the goal of the long task's start states is frame 59, which
    the demo reaches after ceil(60 / 8) = 8 chunks, so its episodes must last at least that; the short task keeps
    its own, shorter limit (ceil(20 / 8) + margin)."""
    import math

    from rla_pipeline.rl.imagined_env import demo_time_limits

    N, D, A, chunk = 2, 3, 3, 8
    seqs = [torch.randn(20, N, D), torch.randn(60, N, D), torch.randn(50, N, D)]
    starts = build_start_states(seqs, chunk=chunk, task_index=[0, 1, 1])  # max_chunks None: from the demos
    margin = ImaginedEnvConfig(success_threshold=1.0).max_chunks_margin
    assert starts.max_chunks.tolist() == [math.ceil(20 / 8) + margin] + [math.ceil(60 / 8) + margin] * 2
    assert demo_time_limits([20, 60, 50], [0, 1, 1], chunk, margin=0) == [3, 8, 8]  # the task's LONGEST demo
    env = ImaginedVectorEnv(ShiftWorldModel(A, D), starts, cfg=ImaginedEnvConfig(num_envs=3, success_threshold=1e-9))
    short, long_a, long_b = _steps_to_truncation(env, [0, 1, 2])
    assert long_a >= math.ceil(60 / chunk) and long_b == long_a
    assert short == math.ceil(20 / chunk) + margin < long_a
    # "corresponding" references reach the long demo's last frame (frame index clamped at 59)
    assert starts.corresponding.shape[1] == long_a
    torch.testing.assert_close(starts.corresponding[1, math.ceil(59 / chunk) - 1], seqs[1][59])
    # an explicit rl.env.max_chunks is an override: every start state gets it
    fixed = ImaginedVectorEnv(ShiftWorldModel(A, D), starts, cfg=ImaginedEnvConfig(
        num_envs=3, max_chunks=4, success_threshold=1e-9))
    assert _steps_to_truncation(fixed, [0, 1, 2]) == [4, 4, 4]
    # a plain start tensor has no demos to take the limit from: a fixed one
    from rla_pipeline.rl.imagined_env import PLAIN_START_MAX_CHUNKS

    plain = ImaginedVectorEnv(ShiftWorldModel(A, D), starts.tokens, goals=starts.goals,
                              cfg=ImaginedEnvConfig(num_envs=3, success_threshold=1e-9))
    assert plain.limit_of_start.tolist() == [PLAIN_START_MAX_CHUNKS] * 3


class _FakeCache:
    def __init__(self, tokens: dict):
        self._tokens = tokens

    def tokens(self, eid):
        return self._tokens[eid]


def test_make_imagined_env_sizes_each_tasks_episodes_from_its_labelled_demos(caplog):
    """The stage builds the same per-task limits from the labelled demos it starts from; an explicit
    ``rl.env.max_chunks`` below a task's demo length is honoured but warned about."""
    import math
    import numpy as np
    import pandas as pd

    from rla_pipeline.stages.wmrl import make_imagined_env

    N, D, A, chunk = 2, 3, 3, 8
    rng = np.random.default_rng(0)
    lengths = {"short_0": 20, "short_1": 18, "long_0": 60, "long_1": 44}
    cache = _FakeCache({e: rng.standard_normal((T, N, D)).astype(np.float32) for e, T in lengths.items()})
    index = pd.DataFrame({"episode_id": list(lengths), "task": ["Short-v0"] * 2 + ["Long-v0"] * 2, "kind": "demo",
                          "action_dim": float(A)})
    params = {"episodes": {"n_labelled_per_task": 2, "n_val_per_task": 0},
              "env": {"num_envs": 4, "success_threshold": 1e-9}}
    env, thr = make_imagined_env(ShiftWorldModel(A, D), cache, index, ["Short-v0", "Long-v0"], params, chunk)
    margin = env.cfg.max_chunks_margin
    by_task = {t: set(env.limit_of_start[env.task_of_start == k].tolist())
               for k, t in enumerate(["Short-v0", "Long-v0"])}
    assert by_task == {"Short-v0": {math.ceil(20 / 8) + margin}, "Long-v0": {math.ceil(60 / 8) + margin}}
    limits = _steps_to_truncation(env, list(range(4)))
    long_idx = [i for i, k in enumerate(env.task_of_start.tolist()) if k == 1]
    assert all(limits[i] >= math.ceil(60 / chunk) for i in long_idx)
    # executed actions per chunk set the pace: 4 executed of 8 -> twice the chunks
    env4, _ = make_imagined_env(ShiftWorldModel(A, D), cache, index, ["Short-v0", "Long-v0"],
                                {**params, "env": {**params["env"], "execute_steps": 4}}, chunk)
    assert int(env4.limit_of_start.max()) == math.ceil(60 / 4) + margin
    with caplog.at_level("WARNING"):
        env3, _ = make_imagined_env(ShiftWorldModel(A, D), cache, index, ["Short-v0", "Long-v0"],
                                    {**params, "env": {**params["env"], "max_chunks": 3}}, chunk)
    assert set(env3.limit_of_start.tolist()) == {3}
    assert "out of reach" in caplog.text and "Long-v0" in caplog.text
