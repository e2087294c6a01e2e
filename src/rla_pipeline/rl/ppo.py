"""PPO, written out in one file (CleanRL's continuous-action PPO, adapted to action chunks and torch vector envs).

Why not a library (Stable-Baselines3 & co.): the policy acts with a Gaussian over a whole action *chunk* (H x A)
from DINO-token observations (B, N, D) or decoded images (B, H, W, 3), and the env is a batched torch world model on the same device. SB3 wants
gymnasium spaces, numpy observations crossing the env boundary every step and its own policy classes; fitting a
pre-trained (behaviour-cloned) TokenPolicy or BC-ResNet into it needs adapters larger than this loop. The loop below is the
textbook algorithm, step by step, with every hyperparameter a documented field. The policy is reached through the
actor-critic interface of ``rl.actor_critic`` (observation dicts in, Gaussian + value out).

One PPO "env step" = one action chunk for every imagined env. Truncated episodes are bootstrapped with
gamma * V(final_obs) (the value of where they stopped), terminated ones (success) are not.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from rla_pipeline import tracking
from rla_pipeline.rl.actor_critic import as_actor_critic
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.progress import Progress
from rla_pipeline.utils.seeding import resolve_device, seed_everything

logger = logging.getLogger(__name__)


@dataclass
class PPOConfig:
    """PPO hyperparameters (paper: 64 envs, chunk 8, gamma 0.9, 2M steps; small CPU default below)."""

    total_env_steps: int = 16_384  # chunk-steps summed over all envs (paper: 2M)
    num_steps: int = 8  # rollout length per env per update, in chunks
    learning_rate: float = 3e-4
    anneal_lr: bool = True  # linear decay of the learning rate to 0 over the updates
    gamma: float = 0.9  # discount per chunk
    gae_lambda: float = 0.95
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4
    clip_coef: float = 0.2  # PPO ratio clip
    clip_vloss: bool = True
    norm_adv: bool = True  # normalise advantages per minibatch
    ent_coef: float = 0.0  # entropy bonus (0: the BC-initialised std is enough exploration)
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float = 0.05  # stop an update's epochs early when the approx. KL passes this (<= 0: never)
    critic_warmup_updates: int = 2  # first updates fit only the value function (the BC policy has no critic yet)
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, d: dict | None) -> "PPOConfig":
        return from_dict(cls, d, where="PPOConfig")

    def __post_init__(self) -> None:
        for name in ("total_env_steps", "num_steps", "update_epochs", "num_minibatches"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"PPOConfig.{name} must be > 0")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError("PPOConfig: need 0 < gamma <= 1 and 0 <= gae_lambda <= 1")


@dataclass
class PPOResult:
    policy: nn.Module  # the trained actor (TokenPolicy / BCResNetPolicy), on CPU, eval mode
    history: pd.DataFrame  # one row per update
    actor_critic: nn.Module | None = None  # the actor with PPO's log-std and critic (CPU, eval)


def _act(ac, obs, deterministic: bool) -> torch.Tensor:
    """Action chunk (B, H, A) of actor-critic ``ac`` for env observation dict ``obs``."""
    if deterministic:
        return ac.action_mean(obs)
    dist, _ = ac.dist_value(ac.encode_obs(obs))
    return dist.sample().view(-1, ac.chunk, ac.action_dim)


def evaluate_imagined(policy, env, n_episodes: int, seed: int = 0, deterministic: bool = True) -> dict[str, float]:
    """Run ``policy`` in ``env`` until ``n_episodes`` episodes finish; mean return, success rate, final distance.

    policy: a TokenPolicy or an actor-critic (``rl.actor_critic``) matching the env's observations."""
    ac = as_actor_critic(policy)
    obs, _ = env.reset(seed=seed)
    B = env.num_envs
    ret = torch.zeros(B, device=env.device)
    returns, successes, dists = [], [], []
    with torch.no_grad():
        while len(returns) < n_episodes:
            obs, r, term, trunc, info = env.step(_act(ac, obs, deterministic))
            ret += r
            done = term | trunc
            for i in torch.nonzero(done).flatten().tolist():
                returns.append(float(ret[i]))
                successes.append(bool(info["success"][i]))
                dists.append(float(info["distance"][i]))
            ret[done] = 0
    return {"mean_return": float(np.mean(returns)), "success_rate": float(np.mean(successes)),
            "final_distance": float(np.mean(dists)), "episodes": float(len(returns))}


def _to(obs: dict, device) -> dict:
    return {k: v.to(device) for k, v in obs.items()}


def _final_obs(obs: dict, info: dict) -> dict:
    """The observation each env reached this step before its autoreset (for bootstrapping truncated episodes)."""
    out = {**obs, "tokens": info["final_obs"], "task": info["final_task"]}
    if "image" in obs:
        out["image"] = info["final_image"]
    return out


def train_ppo(policy, env, cfg: PPOConfig, run_name: str = "wmrl_ppo",
              callback: Callable[[int, dict], None] | None = None) -> PPOResult:
    """Improve ``policy`` with PPO in the vector ``env``.

    policy: a TokenPolicy (wrapped in :class:`~rla_pipeline.rl.actor_critic.TokenActorCritic`) or an actor-critic
    from ``rl.actor_critic`` (e.g. :class:`~rla_pipeline.rl.actor_critic.ImageActorCritic` around BC-ResNet for
    :class:`~rla_pipeline.rl.decoded_env.DecodedImageEnv`).
    env: :class:`~rla_pipeline.rl.imagined_env.ImaginedVectorEnv`-like (dict obs of torch tensors).
    Returns the trained actor (the plain policy: TokenPolicy / BCResNetPolicy; CPU, eval) and a per-update history
    (also logged to MLflow under ``run_name``).
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    ac = as_actor_critic(policy).to(device).train()
    env_device = env.device
    B, S = env.num_envs, cfg.num_steps
    H, A = ac.chunk, ac.action_dim
    batch_size = B * S
    minibatch = max(1, batch_size // cfg.num_minibatches)
    num_updates = max(1, cfg.total_env_steps // batch_size)
    optimizer = torch.optim.Adam([p for p in ac.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5)

    # rollout storage (S, B, ...); observation buffers are allocated from the first encoded observation
    obs_buf: dict[str, torch.Tensor] = {}
    actions = torch.zeros(S, B, H * A, device=device)
    logprobs = torch.zeros(S, B, device=device)
    rewards = torch.zeros(S, B, device=device)
    dones = torch.zeros(S, B, device=device)  # done *before* the step at this index (CleanRL convention)
    values = torch.zeros(S, B, device=device)

    rows: list[dict] = []
    obs, _ = env.reset(seed=cfg.seed)
    next_done = torch.zeros(B, device=device)
    ep_ret = torch.zeros(B, device=device)
    ep_len = torch.zeros(B, device=device)
    global_step = 0
    t_start = time.perf_counter()
    # a tqdm bar on a terminal, rate-limited log lines otherwise (utils/progress.py; RLA_PROGRESS=0 silences)
    with tracking.child_run(run_name, tags={"algo": "ppo"}), Progress(num_updates, run_name, unit="update") as bar:
        tracking.log_params({"ppo": asdict(cfg), "imagined_env": asdict(env.cfg)})
        for update in range(1, num_updates + 1):
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - (update - 1.0) / num_updates)
            finished_ret, finished_succ, finished_dist, finished_len = [], [], [], []
            # ---- collect a rollout ----
            for step in range(S):
                with torch.no_grad():
                    x = ac.encode_obs(_to(obs, device))
                    if not obs_buf:
                        obs_buf = {k: torch.zeros((S, *v.shape), dtype=v.dtype, device=device) for k, v in x.items()}
                    for k, v in x.items():
                        obs_buf[k][step] = v
                    dones[step] = next_done
                    dist, values[step] = ac.dist_value(x)
                    action = dist.sample()  # (B, H*A)
                    logprobs[step] = dist.log_prob(action).sum(-1)
                actions[step] = action
                obs, reward, term, trunc, info = env.step(action.view(B, H, A).to(env_device))
                reward = reward.to(device).float()
                ep_ret += reward  # the env's own reward, before the bootstrap term below
                term, trunc = term.to(device), trunc.to(device)
                if bool(trunc.any()):  # bootstrap truncated episodes from where they stopped
                    with torch.no_grad():
                        v_final = ac.value(ac.encode_obs(_to(_final_obs(obs, info), device)))
                    reward = reward + cfg.gamma * v_final * trunc.float()
                rewards[step] = reward
                next_done = (term | trunc).float()
                global_step += B
                ep_len += 1
                for i in torch.nonzero(next_done).flatten().tolist():
                    finished_ret.append(float(ep_ret[i]))
                    finished_len.append(float(ep_len[i]))
                    finished_succ.append(bool(info["success"][i]))
                    finished_dist.append(float(info["distance"][i]))
                ep_ret *= 1 - next_done
                ep_len *= 1 - next_done

            # ---- GAE ----
            with torch.no_grad():
                next_value = ac.value(ac.encode_obs(_to(obs, device)))
                advantages = torch.zeros_like(rewards)
                lastgaelam = torch.zeros(B, device=device)
                for t in reversed(range(S)):
                    nonterminal = 1.0 - (next_done if t == S - 1 else dones[t + 1])
                    nextvalues = next_value if t == S - 1 else values[t + 1]
                    delta = rewards[t] + cfg.gamma * nextvalues * nonterminal - values[t]
                    lastgaelam = delta + cfg.gamma * cfg.gae_lambda * nonterminal * lastgaelam
                    advantages[t] = lastgaelam
                returns = advantages + values

            # ---- optimise ----
            b_obs = {k: v.reshape(batch_size, *v.shape[2:]) for k, v in obs_buf.items()}
            b_actions, b_logprobs = actions.reshape(batch_size, H * A), logprobs.reshape(batch_size)
            b_adv, b_ret, b_val = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
            actor_on = update > cfg.critic_warmup_updates
            clipfracs, approx_kl = [], torch.tensor(0.0)
            pg_loss = v_loss = entropy = torch.tensor(0.0)
            perm_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + update)
            for _epoch in range(cfg.update_epochs):
                perm = torch.randperm(batch_size, generator=perm_gen).to(device)
                for start in range(0, batch_size, minibatch):
                    mb = perm[start:start + minibatch]
                    mb_obs = {k: v[mb] for k, v in b_obs.items()}
                    dist, newvalue = ac.dist_value(mb_obs)
                    if cfg.clip_vloss:
                        v_unclipped = (newvalue - b_ret[mb]) ** 2
                        v_clipped = b_val[mb] + torch.clamp(newvalue - b_val[mb], -cfg.clip_coef, cfg.clip_coef)
                        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_ret[mb]) ** 2).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - b_ret[mb]) ** 2).mean()
                    loss = cfg.vf_coef * v_loss
                    if actor_on:
                        newlogprob = dist.log_prob(b_actions[mb]).sum(-1)
                        entropy = dist.entropy().sum(-1).mean()
                        logratio = newlogprob - b_logprobs[mb]
                        ratio = logratio.exp()
                        with torch.no_grad():
                            approx_kl = ((ratio - 1) - logratio).mean()
                            clipfracs.append(float(((ratio - 1.0).abs() > cfg.clip_coef).float().mean()))
                        mb_adv = b_adv[mb]
                        if cfg.norm_adv and mb_adv.numel() > 1:
                            mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                        pg_loss = torch.max(-mb_adv * ratio,
                                            -mb_adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                        loss = loss + pg_loss - cfg.ent_coef * entropy
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_([p for p in ac.parameters() if p.requires_grad], cfg.max_grad_norm)
                    optimizer.step()
                if actor_on and cfg.target_kl > 0 and float(approx_kl) > cfg.target_kl:
                    break

            var_y = float(b_ret.var())
            explained_var = float("nan") if var_y == 0 else 1 - float((b_ret - b_val).var()) / var_y
            row = {
                "update": update, "global_step": global_step,
                "mean_return": float(np.mean(finished_ret)) if finished_ret else float("nan"),
                "success_rate": float(np.mean(finished_succ)) if finished_succ else float("nan"),
                "final_distance": float(np.mean(finished_dist)) if finished_dist else float("nan"),
                "episode_length": float(np.mean(finished_len)) if finished_len else float("nan"),
                "episodes": len(finished_ret), "mean_step_reward": float(rewards.mean()),
                "pg_loss": float(pg_loss.detach()), "v_loss": float(v_loss.detach()),
                "entropy": float(entropy.detach()),
                "approx_kl": float(approx_kl), "clipfrac": float(np.mean(clipfracs)) if clipfracs else 0.0,
                "explained_variance": explained_var, "lr": optimizer.param_groups[0]["lr"],
                "std": float(ac.log_std.detach().exp().mean()),
                "steps_per_s": global_step / (time.perf_counter() - t_start), "actor_updated": actor_on,
            }
            rows.append(row)
            tracking.log_metrics({f"ppo/{k}": v for k, v in row.items() if k not in ("update", "actor_updated")},
                                 step=global_step)
            logger.info("ppo update %d/%d return %.4f success %.2f kl %.4f", update, num_updates,
                        row["mean_return"], row["success_rate"], row["approx_kl"])
            bar.set_postfix(ret=f"{row['mean_return']:.4g}", success=f"{row['success_rate']:.2f}",
                            env_steps=global_step)
            bar.update(1)
            if callback is not None:
                callback(update, row)
    ac = ac.cpu().eval()
    return PPOResult(policy=ac.actor, history=pd.DataFrame(rows), actor_critic=ac)
