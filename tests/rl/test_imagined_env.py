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
