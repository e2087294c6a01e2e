"""The WMRL stage (paper Table 3): a token policy behaviour-cloned on cached demo tokens, then PPO inside the
world model (imagined env from demo start states, reward = -token L1 to the goal frame). No Kedro here."""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd
import torch

from rla_pipeline.models.policy import TokenPolicy, TokenPolicyConfig
from rla_pipeline.rl.bc import TokenBCLoss, TokenChunkDataset, select_episodes
from rla_pipeline.rl.imagined_env import (
    ImaginedEnvConfig, ImaginedVectorEnv, build_start_states, calibrate_success_threshold, evaluate_start_states,
)
from rla_pipeline.rl.ppo import PPOConfig, train_ppo
from rla_pipeline.stages.common import (
    EpisodeChoiceConfig, action_dim_of, check_trainer_block, checkpoint_dir, trainer_config,
)
from rla_pipeline.utils.config import check_keys, from_dict

logger = logging.getLogger(__name__)


@dataclass
class WMRLConfig:
    """``params:rl``: episodes (demos for token BC and imagined start states/goals); policy (TokenPolicyConfig;
    tokens/actions/tasks come from the data); bc_trainer (TrainerConfig fields but run_name/seed/device/
    checkpoint_dir); env (ImaginedEnvConfig fields; success_threshold 0 = calibrate from demos; reward_scale
    unset = rewards in units of the threshold); success_quantile (calibration quantile of demo "one chunk before
    the end" distances); ppo (PPOConfig; seed/device come from the run). The imagined success before/after PPO
    scores exactly one episode per start state (every labelled demo's first frame)."""

    episodes: EpisodeChoiceConfig = field(default_factory=EpisodeChoiceConfig)
    policy: TokenPolicyConfig = field(default_factory=TokenPolicyConfig)
    bc_trainer: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    success_quantile: float = 0.5
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        self.bc_trainer = check_trainer_block(self.bc_trainer, "rl.bc_trainer")
        # a dict, not ImaginedEnvConfig: the threshold may be calibrated from the data (0 here) and an unset
        # reward_scale means "in threshold units", both of which the env config itself rejects or cannot tell.
        self.env = check_keys(ImaginedEnvConfig, self.env, where="rl.env")

    @classmethod
    def from_dict(cls, d: "dict | WMRLConfig | None") -> "WMRLConfig":
        return d if isinstance(d, cls) else from_dict(cls, d, where="rl")


def demo_tokens(cache, index: pd.DataFrame, tasks: list[str], cfg: WMRLConfig):
    """-> (EpisodeSelection, cached tokens (T, N, D) per labelled demo, task index per labelled demo)."""
    e = cfg.episodes
    sel = select_episodes(index, tasks, e.n_labelled_per_task, e.n_val_per_task, 0, False)
    task_of = index.set_index("episode_id")["task"]
    return sel, [cache.tokens(eid) for eid in sel.labelled], [tasks.index(task_of[eid]) for eid in sel.labelled]


def train_token_bc(feature_cache, episode_index: pd.DataFrame, params, tasks: Sequence[str], seed: int,
                   device: str, checkpoint_root: str | None = None, run_name: str = "token_bc_policy"):
    """TokenPolicy behaviour-cloned on cached demo tokens + actions. Returns (policy, history).

    Checkpoints in ``<checkpoint_root>/rl/<run_name>``.
    """
    from rla_pipeline.training.trainer import train

    cfg = WMRLConfig.from_dict(params)
    cache, index, tasks = feature_cache, episode_index, list(tasks)
    sel, tokens, task_idx = demo_tokens(cache, index, tasks, cfg)
    A = action_dim_of(index, sel.labelled)
    actions = [cache.steps(eid)["action"] for eid in sel.labelled]
    N, D = tokens[0].shape[1:]
    pconf = dataclasses.replace(cfg.policy, num_tokens=int(N), token_dim=int(D), action_dim=A, num_tasks=len(tasks),
                                task_names=tasks, proprio_dim=0)
    ds = TokenChunkDataset(tokens, actions, task_idx, pconf.chunk, A, stride=cfg.episodes.frame_stride)
    val = None
    if sel.val:
        val = TokenChunkDataset([cache.tokens(x) for x in sel.val], [cache.steps(x)["action"] for x in sel.val],
                                [tasks.index(index.set_index("episode_id").loc[x, "task"]) for x in sel.val],
                                pconf.chunk, A)
    torch.manual_seed(seed)
    tcfg = trainer_config(cfg.bc_trainer, run_name=run_name, device=device, seed=seed, default_progress=False,
                          checkpoint_dir=checkpoint_dir(checkpoint_root, "rl", run_name))
    result = train(TokenPolicy(pconf), TokenBCLoss(), ds, val, tcfg)
    return result.model, result.history.assign(run=run_name)


def make_imagined_env(world_model, cache, index, tasks, params, chunk: int, device: str = "cpu"):
    """Imagined env over demo start states with the success threshold calibrated when not set. -> (env, threshold)."""
    cfg = WMRLConfig.from_dict(params)
    tasks = list(tasks)
    sel, tokens, task_idx = demo_tokens(cache, index, tasks, cfg)
    env_d = dict(cfg.env)
    thr = float(env_d.get("success_threshold", 0.0) or 0.0)
    if thr <= 0:
        thr = calibrate_success_threshold(tokens, chunk, cfg.success_quantile)
    env_d["success_threshold"] = thr
    env_cfg = ImaginedEnvConfig.from_dict(env_d)
    if "reward_scale" not in cfg.env:  # default: rewards in units of the threshold (O(1) for the critic)
        env_cfg.reward_scale = 1.0 / thr
    # frames advanced per imagined step: the executed actions, not the predicted chunk ("corresponding" rewards)
    executed = min(chunk, env_cfg.execute_steps or chunk)
    starts = build_start_states(tokens, executed, env_cfg.max_chunks, task_idx, sel.labelled)
    return ImaginedVectorEnv(world_model.eval(), starts, cfg=env_cfg, device=device), thr


def train_wmrl(world_model, token_bc_policy, feature_cache, episode_index: pd.DataFrame, params,
               tasks: Sequence[str], seed: int, device: str):
    """PPO inside the world model from the token-BC policy. -> (policy, ppo history, imagined-env calibration)."""
    from rla_pipeline import tracking
    from rla_pipeline.utils.seeding import resolve_device

    cfg = WMRLConfig.from_dict(params)
    dev = resolve_device(device)
    world_model = world_model.to(dev)
    chunk = token_bc_policy.config.chunk
    env, thr = make_imagined_env(world_model, feature_cache, episode_index, tasks, cfg, chunk, device=str(dev))
    policy = copy.deepcopy(token_bc_policy)
    before = evaluate_start_states(policy.to(dev), env, seed=seed + 1)
    ppo_cfg = dataclasses.replace(cfg.ppo, seed=seed, device=str(dev))
    result = train_ppo(policy, env, ppo_cfg, run_name="wmrl_ppo")
    after = evaluate_start_states(result.policy.to(dev), env, seed=seed + 1)
    calib = pd.DataFrame([{
        "success_threshold": thr, "threshold_source": "configured" if cfg.env.get("success_threshold") else
        f"calibrated: q{cfg.success_quantile} of demo L1(s_T-1-chunk, s_T-1)",
        "reward_mode": env.cfg.reward_mode, "num_envs": env.num_envs, "chunk": chunk, "max_chunks": env.cfg.max_chunks,
        "executed_per_chunk": min(chunk, env.cfg.execute_steps or chunk),
        **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()},
    }])
    tracking.log_metrics({"wmrl/imagined_success_before": before["success_rate"],
                          "wmrl/imagined_success_after": after["success_rate"],
                          "wmrl/imagined_return_before": before["mean_return"],
                          "wmrl/imagined_return_after": after["mean_return"], "wmrl/success_threshold": thr})
    return result.policy.cpu().eval(), result.history, calib
