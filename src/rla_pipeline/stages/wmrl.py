"""The WMRL stage (paper Table 3): PPO inside the world model (imagined env from demo start states, reward =
-token L1 to the goal frame), started from a behaviour-cloned policy. Two policies (``rl.policy``):

- ``bc_resnet`` (the paper's): the image BC-ResNet of Table 2's BC row (trained on rendered frames and their decoded copies, `actionless_bc.decoded_copies`) acts on the
  world model's states decoded to RGB by the pixel decoder trained on every task (``pixel_decoder_model_all_tasks``,
  checked by :func:`check_decoder_covers_tasks`; ``rl.decoded_env``); PPO adds a log-std and a value head
  (``rl.actor_critic.ImageActorCritic``). The result is again a BC-ResNet, run on rendered frames in the simulator.
- ``token``: a TokenPolicy behaviour-cloned on cached DINO tokens acts on the tokens directly (no decoder).

The stage's parameters (:class:`WMRLConfig`) and the imagined env (:func:`make_imagined_env`) live in
``stages.wmrl_env``, which the evaluation stage uses too. No Kedro here."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
from typing import Any, Sequence

import pandas as pd
import torch

from rla_pipeline.models.policy import BCResNetPolicy, TokenPolicy
from rla_pipeline.rl.actor_critic import ImageActorCritic
from rla_pipeline.rl.bc import TokenBCLoss, TokenChunkDataset
from rla_pipeline.rl.imagined_env import evaluate_start_states
from rla_pipeline.rl.ppo import train_ppo
from rla_pipeline.stages.common import action_dim_of, checkpoint_dir, trainer_config
from rla_pipeline.stages.evaluation import EvaluationConfig, sim_config, table3_tasks
from rla_pipeline.stages.wmrl_env import WMRLConfig, demo_tokens, make_imagined_env, time_limits_by_task

logger = logging.getLogger(__name__)


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
    pconf = dataclasses.replace(cfg.token_policy, num_tokens=int(N), token_dim=int(D), action_dim=A, num_tasks=len(tasks),
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


def start_policy(feature_cache, episode_index: pd.DataFrame, bc_policy, params, tasks: Sequence[str], seed: int,
                 device: str, checkpoint_root: str | None = None):
    """The policy WMRL starts from (Table 3's baseline row). -> (policy, history).

    ``rl.policy`` "bc_resnet": ``bc_policy`` itself (Table 2's BC-ResNet; its history is bc_training_history, the
    one row returned here says so). "token": a TokenPolicy behaviour-cloned on cached tokens (:func:`train_token_bc`).
    """
    cfg = WMRLConfig.from_dict(params)
    if cfg.policy == "token":
        return train_token_bc(feature_cache, episode_index, cfg, tasks, seed, device, checkpoint_root)
    if not isinstance(bc_policy, BCResNetPolicy):
        raise TypeError(f"rl.policy bc_resnet starts from actionless_bc's BCResNetPolicy, got {type(bc_policy).__name__}")
    note = "rl.policy bc_resnet: WMRL starts from bc_policy (Table 2's BC row); its history is bc_training_history"
    return copy.deepcopy(bc_policy).cpu().eval(), pd.DataFrame([{"run": "bc_policy", "note": note}])


def camera_size(index: pd.DataFrame, tasks: Sequence[str], evaluation_params: dict | None) -> int:
    """Side in pixels of the frames the policy gets in the simulator (``stages.evaluation.sim_config``)."""
    return int(sim_config(EvaluationConfig.from_dict(evaluation_params or {}), index, list(tasks)).image_size)


def decoding_gap(policy: BCResNetPolicy, env, store, episode_ids: Sequence[str], task_idx: Sequence[int],
                 max_frames: int = 64, task_names: Sequence[str] | None = None) -> dict[str, Any]:
    """How differently the BC-ResNet acts on a decoded frame than on the rendered frame it stands for.

    Over the start frames of ``episode_ids`` (the imagined env's start states, in its order; at most ``max_frames``,
    evenly spread over them so every task is in): mean |a(real) - a(decoded)| of the action chunks
    (``gap_action_l1``), mean |a(real)| for scale (``gap_action_scale``), and the PSNR (dB) of the decoded frames
    against the real ones at the simulator's camera size. ``task_names`` adds ``gap_by_task``: JSON
    {task: {"gap_action_l1", "gap_action_scale", "frames"}} (Table 3 shows it per task).
    """
    import numpy as np
    import torch.nn.functional as F

    from rla_pipeline.evaluation.image_metrics import psnr

    M = min(len(episode_ids), env.starts.shape[0])
    picks = (np.arange(M) if M <= max_frames else
             np.unique(np.linspace(0, M - 1, max_frames).round().astype(np.int64)))
    ids, tidx = [list(episode_ids)[i] for i in picks], [int(list(task_idx)[i]) for i in picks]
    real = []
    for eid in ids:
        f = torch.from_numpy(store.read_frames(eid)[0]).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
        if f.shape[-1] != env.image_size or f.shape[-2] != env.image_size:
            f = F.interpolate(f, size=(env.image_size, env.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        real.append((f.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
    real = torch.cat(real)  # (M, S, S, 3) uint8
    dev = env.device
    decoded = env.decode(env.starts[torch.as_tensor(picks, dtype=torch.long, device=env.starts.device)]).to(dev)
    task = torch.as_tensor(tidx, dtype=torch.long, device=dev) if policy.config.num_tasks else None
    policy = policy.to(dev).eval()
    with torch.no_grad():
        a_real, a_dec = policy(real.to(dev), task=task), policy(decoded, task=task)
    to_f = lambda x: x.permute(0, 3, 1, 2).float().cpu() / 255.0  # noqa: E731
    diff = (a_real - a_dec).abs().flatten(1).mean(1).cpu()  # (M,) per frame
    scale = a_real.abs().flatten(1).mean(1).cpu()
    out: dict[str, Any] = {
        "gap_action_l1": float(diff.mean()), "gap_action_scale": float(scale.mean()),
        "gap_decoded_psnr": float(psnr(to_f(decoded), to_f(real), max_db=100.0).mean()), "gap_frames": float(len(ids))}
    if task_names is not None:
        t = torch.as_tensor(tidx)
        out["gap_by_task"] = json.dumps({
            task_names[k]: {"gap_action_l1": float(diff[t == k].mean()),
                            "gap_action_scale": float(scale[t == k].mean()), "frames": int((t == k).sum())}
            for k in sorted(set(tidx))}, sort_keys=True)
    return out


def check_decoder_covers_tasks(pixel_decoder, training_record: pd.DataFrame, needed: Sequence[str],
                               table3: Sequence[str] = ()) -> None:
    """Raise when the decoder WMRL acts through never saw a task WMRL imagines or Table 3 evaluates.

    ``training_record``: the decoder's per-task training table (``stages.pixel_decoder.decoder_training_record``:
    task, train_episodes, decoder_digest). Its digest must be ``pixel_decoder``'s own (else the record is of another
    decoder); every task of ``needed`` (the imagined env's start-state tasks) and ``table3`` must have >= 1 training
    episode. A decoder with ``pixel_decoder.split.heldout_task`` held out fails here for that task."""
    from rla_pipeline.utils.hashing import state_dict_digest

    digests = set(training_record["decoder_digest"])
    if digests != {state_dict_digest(pixel_decoder)}:
        raise ValueError("the pixel decoder's training record is of another decoder (weights digest differs): "
                         "pass pixel_decoder_model_all_tasks with its own pixel_decoder_all_tasks_training")
    seen = set(training_record.loc[training_record["train_episodes"] > 0, "task"])
    missing = [t for t in dict.fromkeys([*table3, *needed]) if t not in seen]
    if missing:
        in_t3 = [t for t in missing if t in set(table3)]
        raise ValueError(f"the pixel decoder WMRL acts through never saw task(s) {missing}"
                         + (f" ({in_t3} reported in Table 3)" if in_t3 else "") + f"; it was trained on "
                         f"{sorted(seen)}. WMRL needs a decoder trained on every task (pixel_decoder_model_all_tasks,"
                         " not the held-out pixel_decoder_model)")


def train_wmrl(world_model, start_policy, feature_cache, episode_index: pd.DataFrame, params,
               tasks: Sequence[str], seed: int, device: str, pixel_decoder=None, episodes=None,
               evaluation_params: dict | None = None, pixel_decoder_training: pd.DataFrame | None = None):
    """PPO inside the world model from ``start_policy``. -> (policy, ppo history, imagined-env calibration).

    ``rl.policy`` "bc_resnet": ``start_policy`` is a BCResNetPolicy acting on ``pixel_decoder``'s RGB of the
    imagined states at the simulator's camera size (from ``evaluation_params``, see :func:`camera_size`);
    ``episodes`` (the episode store, optional) adds the decoding-gap diagnostics (:func:`decoding_gap`).
    ``pixel_decoder_training`` (the decoder's per-task training record; the pipeline always passes it):
    :func:`check_decoder_covers_tasks` raises when the decoder never saw a start-state or Table 3 task
    (None: not checked, a warning says so).
    "token": a TokenPolicy on the tokens (``pixel_decoder``/``episodes`` unused).
    The calibration row also holds the imagined env's speed (chunk-steps/s, decoder in the loop when there is one).
    """
    import time

    from rla_pipeline import tracking
    from rla_pipeline.rl.decoded_env import DecodedImageEnv
    from rla_pipeline.rl.imagined_env import imagined_steps_per_second
    from rla_pipeline.utils.seeding import resolve_device

    cfg = WMRLConfig.from_dict(params)
    want = BCResNetPolicy if cfg.policy == "bc_resnet" else TokenPolicy
    if not isinstance(start_policy, want):
        raise TypeError(f"rl.policy {cfg.policy!r} trains a {want.__name__}, got a {type(start_policy).__name__}: "
                        "the start policy was made under another rl.policy (rerun the rl pipeline)")
    tasks = list(tasks)
    if start_policy.config.num_tasks and list(start_policy.config.task_names) != tasks:
        raise ValueError(f"start policy tasks {start_policy.config.task_names} differ from params:tasks {tasks}")
    dev = resolve_device(device)
    world_model = world_model.to(dev)
    chunk = start_policy.config.chunk
    env, thr = make_imagined_env(world_model, feature_cache, episode_index, tasks, cfg, chunk, device=str(dev))
    limits_by_task = time_limits_by_task(env.task_of_start, env.limit_of_start, tasks)
    extra: dict[str, Any] = {"policy": cfg.policy}
    if cfg.policy == "bc_resnet":
        if pixel_decoder is None:
            raise ValueError("rl.policy bc_resnet needs the pixel decoder (pixel_decoder_model_all_tasks): run its "
                             "pipeline")
        if pixel_decoder_training is not None:
            start_tasks = [tasks[k] for k in sorted(set(env.task_of_start.tolist()))]
            check_decoder_covers_tasks(pixel_decoder, pixel_decoder_training, start_tasks,
                                       table3_tasks(EvaluationConfig.from_dict(evaluation_params or {}), tasks))
        else:
            logger.warning("WMRL: the pixel decoder's training tasks are unknown (no training record): not checked "
                           "that it saw every task WMRL imagines and Table 3 reports")
        size = camera_size(episode_index, tasks, evaluation_params)
        env = DecodedImageEnv(env, pixel_decoder, size)
        ac = ImageActorCritic(copy.deepcopy(start_policy), cfg.bc_resnet)
        extra.update(image_size=size, trainable=cfg.bc_resnet.trainable)
        if episodes is not None:
            sel, _, task_idx = demo_tokens(feature_cache, episode_index, tasks, cfg)
            extra.update(decoding_gap(start_policy, env, episodes, sel.labelled, task_idx, task_names=tasks))
    else:
        ac = copy.deepcopy(start_policy)
    speed = imagined_steps_per_second(env, torch.zeros(env.num_envs, chunk, start_policy.config.action_dim,
                                                       device=env.device), n_calls=2, seed=seed)
    extra["imagined_env_chunks_per_s"] = speed["env_chunks_per_s"]
    before = evaluate_start_states(ac.to(dev), env, seed=seed + 1)
    ppo_cfg = dataclasses.replace(cfg.ppo, seed=seed, device=str(dev))
    t0 = time.perf_counter()
    result = train_ppo(ac, env, ppo_cfg, run_name="wmrl_ppo")
    extra["ppo_seconds"] = time.perf_counter() - t0
    extra["ppo_env_chunks_per_s"] = float(result.history["global_step"].iloc[-1]) / extra["ppo_seconds"]
    after = evaluate_start_states(result.actor_critic.to(dev), env, seed=seed + 1)
    calib = pd.DataFrame([{
        "success_threshold": thr, "threshold_source": "configured" if cfg.env.get("success_threshold") else
        f"calibrated: q{cfg.success_quantile} of demo L1(s_T-1-chunk, s_T-1)",
        "reward_mode": env.cfg.reward_mode, "num_envs": env.num_envs, "chunk": chunk,
        "max_chunks": int(env.limit_of_start.max()), "max_chunks_source":
        "configured" if env.cfg.max_chunks is not None else f"demos (+{env.cfg.max_chunks_margin} chunks)",
        "max_chunks_by_task": json.dumps(limits_by_task, sort_keys=True),
        "executed_per_chunk": min(chunk, env.cfg.execute_steps or chunk), **extra,
        **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()},
    }])
    tracking.log_metrics({"wmrl/imagined_success_before": before["success_rate"],
                          "wmrl/imagined_success_after": after["success_rate"],
                          "wmrl/imagined_return_before": before["mean_return"],
                          "wmrl/imagined_return_after": after["mean_return"], "wmrl/success_threshold": thr,
                          "wmrl/imagined_env_chunks_per_s": extra["imagined_env_chunks_per_s"],
                          **{f"wmrl/{k}": v for k, v in extra.items()
                             if k.startswith("gap_") and isinstance(v, float)}})
    return result.policy.cpu().eval(), result.history, calib
