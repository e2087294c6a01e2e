"""The WMRL stage's parameters (``params:rl``, :class:`WMRLConfig`) and the imagined env they describe, built from
the labelled demos (:func:`make_imagined_env`): start states, goals, the calibrated success threshold, each task's
time limit.

Two stages use them: ``stages.wmrl`` trains PPO inside that env, and ``stages.evaluation`` times it for the speed
table and checks that the simulator executes as many actions per chunk as it did. Here, below both, the evaluation
stage reaches them without importing the WMRL stage (which imports the evaluation stage for the simulator's camera
size and Table 3's tasks). No Kedro here."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd
import torch

from rla_pipeline.models.policy import TokenPolicyConfig
from rla_pipeline.rl.actor_critic import ImageActorCriticConfig
from rla_pipeline.rl.bc import select_episodes
from rla_pipeline.rl.imagined_env import (
    ImaginedEnvConfig, ImaginedVectorEnv, build_start_states, calibrate_success_threshold,
)
from rla_pipeline.rl.ppo import PPOConfig
from rla_pipeline.stages.common import EpisodeChoiceConfig, check_trainer_block
from rla_pipeline.utils.config import check_keys, from_dict

logger = logging.getLogger(__name__)

POLICY_MODES = ("bc_resnet", "token")


@dataclass
class WMRLConfig:
    """``params:rl``: policy ("bc_resnet": Table 2's BC-ResNet on decoded RGB, the paper's; "token": a token
    policy on DINO tokens); episodes (imagined start states/goals, and token BC's demos); bc_resnet
    (ImageActorCriticConfig: what PPO trains of the BC-ResNet); token_policy (TokenPolicyConfig; tokens/actions/
    tasks come from the data); bc_trainer (TrainerConfig fields but run_name/seed/device/
    checkpoint_dir); env (ImaginedEnvConfig fields; success_threshold 0 = calibrate from demos; reward_scale
    unset = rewards in units of the threshold; max_chunks null = each start state's time limit from its task's
    longest labelled demo, see :func:`make_imagined_env`); success_quantile (calibration quantile of demo "one
    chunk before the end" distances); ppo (PPOConfig; seed/device come from the run). The imagined success
    before/after PPO scores exactly one episode per start state (every labelled demo's first frame)."""

    policy: str = "bc_resnet"
    episodes: EpisodeChoiceConfig = field(default_factory=EpisodeChoiceConfig)
    bc_resnet: ImageActorCriticConfig = field(default_factory=ImageActorCriticConfig)
    token_policy: TokenPolicyConfig = field(default_factory=TokenPolicyConfig)
    bc_trainer: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    success_quantile: float = 0.5
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        if self.policy not in POLICY_MODES:
            raise ValueError(f"rl.policy must be one of {POLICY_MODES}, got {self.policy!r}")
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


def time_limits_by_task(task_of_start: torch.Tensor, limits: torch.Tensor, tasks: Sequence[str]) -> dict[str, int]:
    """Imagined time limit (chunks) of each task's start states (the longest, should they differ)."""
    out: dict[str, int] = {}
    for k, lim in zip(task_of_start.tolist(), limits.tolist()):
        out[tasks[k]] = max(out.get(tasks[k], 0), int(lim))
    return out


def _log_time_limits(starts, lengths: Sequence[int], executed: int, tasks: Sequence[str]) -> None:
    """Log each task's imagined time limit; warn where it is shorter than the task's longest demo needs (an explicit
    ``rl.env.max_chunks`` below ``ceil(T / executed)``: imagined success is then out of reach at the demo's pace)."""
    need: dict[str, int] = {}
    for k, T in zip(starts.task.tolist(), lengths):
        need[tasks[k]] = max(need.get(tasks[k], 0), -(-int(T) // executed))
    limits = time_limits_by_task(starts.task, starts.max_chunks, tasks)
    logger.info("imagined time limits (chunks of %d frames) per task: %s; the longest demo needs %s", executed,
                limits, need)
    short = {t: (limits[t], n) for t, n in need.items() if limits[t] < n}
    if short:
        logger.warning("rl.env.max_chunks is shorter than the demos of %s ((limit, chunks the longest demo needs)): "
                       "the goal (the demo's last frame) is out of reach there; null = from the demos", short)


def make_imagined_env(world_model, cache, index, tasks, params, chunk: int, device: str = "cpu"):
    """Imagined env over demo start states with the success threshold calibrated when not set. -> (env, threshold).

    Time limit per start state: ``rl.env.max_chunks`` when set, else from its task's longest labelled demo,
    ``ceil(T_max / executed actions per chunk) + rl.env.max_chunks_margin`` (``rl.imagined_env.demo_time_limits``).
    """
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
    starts = build_start_states(tokens, executed, env_cfg.max_chunks, task_idx, sel.labelled,
                                margin=env_cfg.max_chunks_margin)
    _log_time_limits(starts, [len(t) for t in tokens], executed, tasks)
    env = ImaginedVectorEnv(world_model.eval(), starts, cfg=env_cfg, device=device)
    if len(getattr(world_model, "robots", None) or []) > 1:  # robot of each start state, from the episode index
        robot_of = index.set_index("episode_id")["robot"]
        env.robot_of_start = world_model.robot_ids([robot_of[eid] for eid in sel.labelled]).to(env.device)
    return env, thr
