"""PPO really improves a policy inside an imagined env (a tiny exact world model where reaching the goal needs one
specific action chunk)."""
from __future__ import annotations

import torch

from rla_pipeline.models.policy import TokenPolicy, TokenPolicyConfig
from rla_pipeline.rl.imagined_env import ImaginedEnvConfig, ImaginedVectorEnv
from rla_pipeline.rl.ppo import PPOConfig, evaluate_imagined, train_ppo


class ShiftWorldModel(torch.nn.Module):
    def __init__(self, action_dim: int, token_dim: int):
        super().__init__()
        self.W = torch.eye(action_dim, token_dim)

    def predict_next(self, s_t, actions, action_mask, generator=None):
        return s_t + ((actions * action_mask[..., None]).mean(1) @ self.W)[:, None, :]


def test_ppo_increases_imagined_return():
    torch.manual_seed(0)
    N, D, A, H = 4, 6, 2, 2
    starts = torch.randn(8, N, D) * 0.1
    target = torch.tensor([0.6, -0.4])
    goals = starts + (target @ torch.eye(A, D))[None, None, :]
    env = ImaginedVectorEnv(ShiftWorldModel(A, D), starts, goals=goals, cfg=ImaginedEnvConfig(
        num_envs=32, max_chunks=1, success_threshold=0.02, terminate_on_success=False, reward_scale=10.0))
    policy = TokenPolicy(TokenPolicyConfig(num_tokens=N, token_dim=D, action_dim=A, chunk=H, token_proj=4,
                                           hidden=32, init_log_std=-1.0))
    before = evaluate_imagined(policy, env, n_episodes=64, seed=1)
    result = train_ppo(policy, env, PPOConfig(total_env_steps=32 * 2 * 30, num_steps=2, learning_rate=3e-3,
                                              critic_warmup_updates=1, device="cpu", target_kl=0.0))
    after = evaluate_imagined(result.policy, env, n_episodes=64, seed=1)
    h = result.history
    assert len(h) == 30 and {"mean_return", "approx_kl", "v_loss", "success_rate"} <= set(h.columns)
    assert after["mean_return"] > before["mean_return"] + 0.5, (before, after)
    assert after["final_distance"] < 0.5 * before["final_distance"]
    assert h["mean_return"].tail(5).mean() > h["mean_return"].head(5).mean()
