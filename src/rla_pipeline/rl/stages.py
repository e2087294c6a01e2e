"""The policy stages as plain functions (the Kedro nodes of actionless_bc, rl and evaluation only call these).

- :func:`train_bc_stage`: BC-ResNet on labelled demos; with ``rla`` given, BC+RLA (same policy + linear latent head,
  also trained on actionless videos with z targets from the frozen RLA encoder). Same data order, seed and budget.
- :func:`train_token_bc_stage`: TokenPolicy behaviour-cloned on cached demo tokens (the WMRL starting point).
- :func:`train_wmrl_stage`: PPO for that policy inside the world model (imagined env from demo start states).
- :func:`evaluate_policies_in_sim`: every (policy, task) in the real simulator on held-out seeds.
- :func:`speed_table`: imagined env steps/s (batched) vs real simulator steps/s (render + DINO encode).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from rla_pipeline.episodes.format import episode_actions
from rla_pipeline.models.policy import BCResNetConfig, BCResNetPolicy, TokenPolicy, TokenPolicyConfig
from rla_pipeline.rl.bc import (
    BCLoss, ImageChunkDataset, TokenBCLoss, TokenChunkDataset, latent_targets, resize_frames, select_episodes,
)
from rla_pipeline.rl.imagined_env import (
    ImaginedEnvConfig, ImaginedVectorEnv, build_start_states, calibrate_success_threshold, imagined_steps_per_second,
)
from rla_pipeline.rl.ppo import PPOConfig, evaluate_imagined, train_ppo
from rla_pipeline.utils.config import from_dict

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ configs
@dataclass
class EpisodeChoiceConfig:
    """Which episodes the policies learn from (per task; the paper: 50 labelled demos, 150 for PushT, + up to 1000
    pixel-only trajectories)."""

    n_labelled_per_task: int = 10
    n_val_per_task: int = 1
    max_actionless_per_task: int = 40
    extra_demos_as_actionless: bool = True  # demos beyond labelled+val count as pixel-only videos (labels hidden)
    frame_stride: int = 1  # every k-th frame is a training sample


@dataclass
class ActionlessBCConfig:
    """``actionless_bc`` parameters."""

    episodes: EpisodeChoiceConfig = field(default_factory=EpisodeChoiceConfig)
    policy: dict = field(default_factory=dict)  # BCResNetConfig fields (action_dim/tasks/latent shape are filled in)
    loss: dict = field(default_factory=dict)  # BCLoss fields (latent weights: paper 0.05 L1 + 0.05 MSE)
    trainer: dict = field(default_factory=dict)  # TrainerConfig fields except run_name/seed/device
    labelled_fraction: float = 0.5  # BC+RLA: labelled frames repeated to be at least this share of samples
    use_mask: bool = False  # multiply frames by the foreground mask (then evaluation.sim.mask_images must be true)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ActionlessBCConfig":
        return from_dict(cls, d, where="actionless_bc")


@dataclass
class WMRLConfig:
    """``rl`` parameters: token BC warm start, imagined env, PPO."""

    episodes: EpisodeChoiceConfig = field(default_factory=EpisodeChoiceConfig)
    policy: dict = field(default_factory=dict)  # TokenPolicyConfig fields (tokens/actions/tasks are filled in)
    bc_trainer: dict = field(default_factory=dict)  # TrainerConfig fields for the token BC warm start
    env: dict = field(default_factory=dict)  # ImaginedEnvConfig fields; success_threshold 0 = calibrate from demos
    success_quantile: float = 0.5  # calibration: quantile of demo "one chunk before the end" distances
    ppo: dict = field(default_factory=dict)  # PPOConfig fields (seed/device are filled in)
    eval_episodes: int = 128  # imagined episodes to score before/after PPO

    @classmethod
    def from_dict(cls, d: dict | None) -> "WMRLConfig":
        return from_dict(cls, d, where="rl")


def _trainer_config(d: dict, run_name: str, seed: int, device: str):
    from rla_pipeline.training.trainer import TrainerConfig

    d = dict(d)
    if d.get("checkpoint_dir"):  # one folder per policy under the stage's checkpoint folder
        d["checkpoint_dir"] = str(Path(d["checkpoint_dir"]) / run_name)
    return TrainerConfig.from_dict({"progress": False, **d, "run_name": run_name, "seed": seed, "device": device})


def _action_dim(index: pd.DataFrame, eids: Sequence[str]) -> int:
    dims = index.set_index("episode_id").loc[list(eids), "action_dim"].dropna().astype(int).unique()
    if len(dims) != 1:
        raise ValueError(f"labelled demos must share one action width, found {sorted(dims)}")
    return int(dims[0])


# ------------------------------------------------------------------------------------------------ BC / BC+RLA
def _image_episodes(store, index, eids, tasks, size, use_mask, with_actions, z_of=None) -> list[dict]:
    rows = index.set_index("episode_id")
    eps = []
    for eid in eids:
        frames = store.read_frames(eid)
        masks = store.read_masks(eid) if use_mask else None
        ep = {"frames": resize_frames(frames, size, masks), "task": tasks.index(rows.loc[eid, "task"])}
        if with_actions:
            ep["actions"] = episode_actions(store.read_steps(eid))
        if z_of is not None:
            ep["z"] = z_of(eid)
        eps.append(ep)
    return eps


def train_bc_stage(store, index: pd.DataFrame, tasks: Sequence[str], cfg: ActionlessBCConfig, seed: int,
                   device: str, run_name: str, cache=None, rla=None):
    """BC-ResNet (``rla`` None) or BC+RLA (``rla`` + ``cache``). Returns (policy, history DataFrame)."""
    from rla_pipeline.training.trainer import train

    tasks = list(tasks)
    e = cfg.episodes
    sel = select_episodes(index, tasks, e.n_labelled_per_task, e.n_val_per_task, e.max_actionless_per_task,
                          e.extra_demos_as_actionless)
    A = _action_dim(index, sel.labelled)
    with_latent = rla is not None
    pcfg = {**cfg.policy, "action_dim": A, "num_tasks": len(tasks), "task_names": tasks}
    if with_latent:
        pcfg.update(latent_tokens=rla.config.latent_tokens, latent_dim=rla.config.latent_dim)
    pconf = BCResNetConfig.from_dict(pcfg)
    z_of = None
    if with_latent:
        rla = rla.eval()
        z_of = lambda eid: latent_targets(rla, cache.tokens(eid), h=pconf.chunk)  # noqa: E731
    size = pconf.image_size
    train_eps = _image_episodes(store, index, sel.labelled, tasks, size, cfg.use_mask, True, z_of)
    if with_latent:
        train_eps += _image_episodes(store, index, sel.actionless, tasks, size, cfg.use_mask, False, z_of)
    val_eps = _image_episodes(store, index, sel.val, tasks, size, cfg.use_mask, True) if sel.val else []
    latent_shape = (pconf.latent_tokens, pconf.latent_dim) if with_latent else None
    train_ds = ImageChunkDataset(train_eps, pconf.chunk, A, stride=e.frame_stride,
                                 labelled_fraction=cfg.labelled_fraction if with_latent else 0.0,
                                 latent_shape=latent_shape)
    val_ds = ImageChunkDataset(val_eps, pconf.chunk, A, latent_shape=latent_shape) if val_eps else None
    logger.info("%s: %d labelled + %d actionless samples (%d labelled, %d actionless episodes)", run_name,
                train_ds.num_labelled, train_ds.num_unlabelled, len(sel.labelled),
                len(sel.actionless) if with_latent else 0)
    torch.manual_seed(seed)  # same initial weights for BC and BC+RLA (the latent head is created last)
    policy = BCResNetPolicy(pconf)
    loss = BCLoss.from_dict(cfg.loss)
    if not with_latent:
        loss = dataclasses.replace(loss, latent_l1_weight=0.0, latent_mse_weight=0.0)
    result = train(policy, loss, train_ds, val_ds, _trainer_config(cfg.trainer, run_name, seed, device))
    hist = result.history.assign(run=run_name)
    return result.model, hist


# ------------------------------------------------------------------------------------------------ token BC / WMRL
def _demo_tokens(cache, index, tasks, cfg: WMRLConfig):
    e = cfg.episodes
    sel = select_episodes(index, tasks, e.n_labelled_per_task, e.n_val_per_task, 0, False)
    task_of = index.set_index("episode_id")["task"]
    return sel, [cache.tokens(eid) for eid in sel.labelled], [tasks.index(task_of[eid]) for eid in sel.labelled]


def train_token_bc_stage(cache, index: pd.DataFrame, tasks: Sequence[str], cfg: WMRLConfig, seed: int,
                         device: str, run_name: str = "token_bc_policy"):
    """TokenPolicy behaviour-cloned on cached demo tokens + actions. Returns (policy, history)."""
    from rla_pipeline.training.trainer import train

    tasks = list(tasks)
    sel, tokens, task_idx = _demo_tokens(cache, index, tasks, cfg)
    A = _action_dim(index, sel.labelled)
    actions = [cache.steps(eid)["action"] for eid in sel.labelled]
    N, D = tokens[0].shape[1:]
    pconf = TokenPolicyConfig.from_dict({**cfg.policy, "num_tokens": int(N), "token_dim": int(D), "action_dim": A,
                                         "num_tasks": len(tasks), "task_names": tasks, "proprio_dim": 0})
    ds = TokenChunkDataset(tokens, actions, task_idx, pconf.chunk, A, stride=cfg.episodes.frame_stride)
    val = None
    if sel.val:
        val = TokenChunkDataset([cache.tokens(x) for x in sel.val], [cache.steps(x)["action"] for x in sel.val],
                                [tasks.index(index.set_index("episode_id").loc[x, "task"]) for x in sel.val],
                                pconf.chunk, A)
    torch.manual_seed(seed)
    result = train(TokenPolicy(pconf), TokenBCLoss(), ds, val, _trainer_config(cfg.bc_trainer, run_name, seed, device))
    return result.model, result.history.assign(run=run_name)


def make_imagined_env(world_model, cache, index, tasks, cfg: WMRLConfig, chunk: int, device: str = "cpu"):
    """Imagined env over demo start states with the success threshold calibrated when not set. -> (env, threshold)."""
    tasks = list(tasks)
    sel, tokens, task_idx = _demo_tokens(cache, index, tasks, cfg)
    env_d = dict(cfg.env)
    thr = float(env_d.get("success_threshold", 0.0) or 0.0)
    if thr <= 0:
        thr = calibrate_success_threshold(tokens, chunk, cfg.success_quantile)
    env_d["success_threshold"] = thr
    env_cfg = ImaginedEnvConfig.from_dict(env_d)
    if "reward_scale" not in cfg.env:  # default: rewards in units of the threshold (O(1) for the critic)
        env_cfg.reward_scale = 1.0 / thr
    starts = build_start_states(tokens, chunk, env_cfg.max_chunks, task_idx, sel.labelled)
    return ImaginedVectorEnv(world_model.eval(), starts, cfg=env_cfg, device=device), thr


def train_wmrl_stage(world_model, token_bc_policy, cache, index, tasks, cfg: WMRLConfig, seed: int, device: str):
    """PPO inside the world model from the token-BC policy. Returns (policy, ppo history, calibration table)."""
    from rla_pipeline.utils.seeding import resolve_device

    dev = resolve_device(device)
    world_model = world_model.to(dev)
    chunk = token_bc_policy.config.chunk
    env, thr = make_imagined_env(world_model, cache, index, tasks, cfg, chunk, device=str(dev))
    policy = copy.deepcopy(token_bc_policy)
    before = evaluate_imagined(policy.to(dev), env, cfg.eval_episodes, seed=seed + 1)
    ppo_cfg = PPOConfig.from_dict({**cfg.ppo, "seed": seed, "device": str(dev)})
    result = train_ppo(policy, env, ppo_cfg, run_name="wmrl_ppo")
    after = evaluate_imagined(result.policy.to(dev), env, cfg.eval_episodes, seed=seed + 1)
    calib = pd.DataFrame([{
        "success_threshold": thr, "threshold_source": "configured" if cfg.env.get("success_threshold") else
        f"calibrated: q{cfg.success_quantile} of demo L1(s_T-1-chunk, s_T-1)",
        "reward_mode": env.cfg.reward_mode, "num_envs": env.num_envs, "chunk": chunk, "max_chunks": env.cfg.max_chunks,
        **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()},
    }])
    from rla_pipeline import tracking

    tracking.log_metrics({"wmrl/imagined_success_before": before["success_rate"],
                          "wmrl/imagined_success_after": after["success_rate"],
                          "wmrl/imagined_return_before": before["mean_return"],
                          "wmrl/imagined_return_after": after["mean_return"], "wmrl/success_threshold": thr})
    return result.policy.cpu().eval(), result.history, calib


# ------------------------------------------------------------------------------------------------ evaluation
@dataclass
class EvaluationConfig:
    """``evaluation`` parameters."""

    n_episodes: int = 10  # per (policy, task)
    seed_offset: int = 10_000  # eval seeds: seed_offset + global seed * 1000 + i (training demos use low seeds)
    sim: dict = field(default_factory=dict)  # SimEvalConfig fields; image_size null = the episodes' own size
    speed_steps: int = 20  # simulator steps timed for the speed table
    speed_calls: int = 5  # batched imagined-env calls timed

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvaluationConfig":
        return from_dict(cls, d, where="evaluation")


def eval_seeds(cfg: EvaluationConfig, seed: int) -> list[int]:
    return [cfg.seed_offset + 1000 * seed + i for i in range(cfg.n_episodes)]


def sim_config(cfg: EvaluationConfig, index: pd.DataFrame, tasks: Sequence[str]):
    """SimEvalConfig with image size and control mode taken from the training episodes when not set."""
    from rla_pipeline.rl.sim_eval import SimEvalConfig

    d = dict(cfg.sim)
    rows = index[index["task"].isin(list(tasks)) & (index["kind"] == "demo")]
    if d.get("image_size") is None:
        d["image_size"] = int(rows["height"].iloc[0]) if len(rows) else 128
    if d.get("control_mode") is None and len(rows) and rows["control_mode"].notna().any():
        d["control_mode"] = str(rows["control_mode"].dropna().iloc[0])
    d = {k: v for k, v in d.items() if v is not None or k == "max_steps"}
    return SimEvalConfig.from_dict(d)


def evaluate_policies_in_sim(policies: dict[str, tuple[str, Any]], tasks: Sequence[str], cfg: EvaluationConfig,
                             index: pd.DataFrame, seed: int, encoder=None) -> pd.DataFrame:
    """policies: name -> (kind "image"|"token", model). One row per episode (see ``evaluate_in_sim``)."""
    from rla_pipeline.rl.sim_eval import check_disjoint_seeds, evaluate_in_sim

    seeds = eval_seeds(cfg, seed)
    if "seed" in index:
        check_disjoint_seeds(seeds, index["seed"].dropna().astype(int).tolist())
    scfg = sim_config(cfg, index, tasks)
    frames = [evaluate_in_sim(kind, model, task, cfg.n_episodes, seeds, scfg, encoder=encoder, policy_name=name)
              for task in tasks for name, (kind, model) in policies.items()]
    return pd.concat(frames, ignore_index=True)


def speed_table(world_model, cache, index, tasks, rl_cfg: WMRLConfig, eval_cfg: EvaluationConfig, encoder,
                chunk: int, action_dim: int) -> pd.DataFrame:
    """Imagined env (batched world model) vs real simulator (render; render + DINO encode), steps per second.
    One imagined chunk-step stands for ``chunk`` simulator steps of ``num_envs`` envs: compare ``frames_per_s``."""
    from rla_pipeline.rl.sim_eval import sim_steps_per_second

    env, _ = make_imagined_env(world_model, cache, index, tasks, rl_cfg, chunk)
    im = imagined_steps_per_second(env, torch.zeros(env.num_envs, chunk, action_dim), n_calls=eval_cfg.speed_calls)
    scfg = sim_config(eval_cfg, index, tasks)
    sim = sim_steps_per_second(list(tasks)[0], scfg, encoder=encoder, n_steps=eval_cfg.speed_steps)
    return pd.DataFrame([
        {"loop": f"imagined env ({env.num_envs} envs batched, chunk {chunk})", "frames_per_s": im["frames_per_s"],
         "env_steps_per_s": im["env_chunks_per_s"], "note": "one world-model call per chunk for all envs"},
        {"loop": "ManiSkill simulator (render)", "frames_per_s": sim["sim_render_steps_per_s"],
         "env_steps_per_s": sim["sim_render_steps_per_s"], "note": f"1 env, {scfg.image_size} px, CPU physics"},
        {"loop": "ManiSkill simulator (render + DINO encode)", "frames_per_s": sim["sim_render_encode_steps_per_s"],
         "env_steps_per_s": sim["sim_render_encode_steps_per_s"], "note": "what a token policy pays per observed frame"},
    ])
