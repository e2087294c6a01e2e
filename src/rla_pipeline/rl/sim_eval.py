"""Run trained policies in the real ManiSkill simulator and count successes.

Loop per episode: reset(seed) -> render frame -> observation for the policy (image policies: the RGB frame;
token policies: DINO tokens from a :class:`~rla_pipeline.features.encoder.DinoEncoder` built with the SAME config as
the feature cache, foreground-masked the same way) -> action chunk (deterministic: the mean) -> execute its first
``execute_steps`` actions (receding horizon) -> repeat until success or the task's step limit
(``SimEvalConfig.steps_for``: by default the limit the demos were made with).
An episode is a success when ManiSkill reports success at any step (the episode stops there).

Seeds: evaluation seeds must not overlap the seeds of the training demos; the evaluation pipeline draws them from
its own range (``seed_offset``, default 10_000) and :func:`check_disjoint_seeds` refuses overlaps.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from rla_pipeline.models.policy import task_index_of
from rla_pipeline.sim.envs import check_step_limits, step_limit
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.progress import Progress

logger = logging.getLogger(__name__)

POLICY_KINDS = ("image", "token")


@dataclass
class SimEvalConfig:
    """How policies are run in the simulator.

    Step limits (``steps_for``): ``task_max_steps[task]``, else ``max_steps`` (one limit for every task), else the
    project's table ``sim.envs.TASK_MAX_STEPS``, the limits the demos are made with by default (cube tasks 50,
    RollBall 100, PullCubeTool 150, PushT 300): a policy gets as many steps as the longest expert demo needed.
    The simulator obeys the limit, above the task's registered one too. A failing episode runs the whole limit.
    """

    image_size: int = 128  # camera size; use the size the training episodes were rendered at
    control_mode: str = "pd_ee_delta_pos"
    with_mask: bool = True  # render the foreground mask (token policies: DINO on masked RGB, like the cache)
    mask_images: bool = False  # image (BC-ResNet) policies: multiply RGB by the mask (match actionless_bc.use_mask)
    # receding horizon: actions of each predicted chunk executed before re-planning; None = the whole chunk. WMRL's
    # imagined env (rl.env.execute_steps) must execute as many, which stages.evaluation checks.
    execute_steps: int | None = None
    max_steps: int | None = None  # one step limit for every task; None = each task's limit (see above)
    task_max_steps: dict[str, int] = field(default_factory=dict)  # per-task limits overriding max_steps and the table
    # simulator processes for image policies (sim/parallel.py); 1 = in this process. Rows are the same as with 1
    # except the wall-clock columns (seconds, sim_seconds, encode_seconds). Token policies run in-process.
    workers: int = 1

    @classmethod
    def from_dict(cls, d: dict | None) -> "SimEvalConfig":
        return from_dict(cls, d, where="SimEvalConfig")

    def __post_init__(self) -> None:
        if int(self.workers) < 1:
            raise ValueError(f"SimEvalConfig.workers must be >= 1, got {self.workers}")
        if self.execute_steps is not None and self.execute_steps < 1:
            raise ValueError("SimEvalConfig.execute_steps must be >= 1 (or None = the whole chunk)")
        self.task_max_steps = check_step_limits(self.max_steps, self.task_max_steps, "SimEvalConfig")

    def steps_for(self, task: str) -> int | None:
        """The step limit of ``task``'s evaluation episodes (None: a task outside the table, ManiSkill's own)."""
        return step_limit(task, self.max_steps, self.task_max_steps)


def executed_actions(execute_steps: int | None, chunk: int) -> int:
    """Actions of a ``chunk``-long prediction that run before re-planning (None = all of them)."""
    return min(chunk, execute_steps or chunk)


def check_disjoint_seeds(eval_seeds: Iterable[int], train_seeds: Iterable[int]) -> None:
    """Raise when an evaluation seed was also used to make training episodes."""
    overlap = sorted(set(int(s) for s in eval_seeds) & set(int(s) for s in train_seeds if s is not None))
    if overlap:
        raise ValueError(f"evaluation seeds overlap training seeds, e.g. {overlap[:5]}: pick another seed range")


def _observe(policy_kind: str, policy, frame, encoder, cfg: SimEvalConfig, task_idx: int | None):
    """Frame -> deterministic action chunk (H, A) as numpy; also returns seconds spent in the DINO encoder."""
    t_task = None if task_idx is None else torch.tensor([task_idx], dtype=torch.long)
    enc_s = 0.0
    with torch.no_grad():
        if policy_kind == "image":
            rgb = frame.rgb
            if cfg.mask_images and frame.mask is not None:
                rgb = rgb * frame.mask[..., None].astype(rgb.dtype)
            img = torch.from_numpy(np.ascontiguousarray(rgb))[None]
            proprio = None
            if policy.config.proprio_dim:
                proprio = torch.from_numpy(frame.proprio[: policy.config.proprio_dim])[None]
            chunk = policy.act(img, proprio=proprio, task=t_task)
        else:
            t0 = time.perf_counter()
            masks = None if frame.mask is None else frame.mask[None]
            tokens = encoder.encode(frame.rgb[None], masks)  # (1, N, D)
            enc_s = time.perf_counter() - t0
            proprio = None
            if policy.config.proprio_dim:
                proprio = torch.from_numpy(frame.proprio[: policy.config.proprio_dim])[None]
            chunk = policy.act(tokens, proprio=proprio, task=t_task)
    return chunk[0].cpu().numpy(), enc_s


def _make_eval_env(task: str, cfg: SimEvalConfig):
    from rla_pipeline.sim.envs import SimEnvConfig, make_env

    return make_env(SimEnvConfig(task=task, image_size=cfg.image_size, control_mode=cfg.control_mode,
                                 with_mask=cfg.with_mask or cfg.mask_images,
                                 max_episode_steps=cfg.steps_for(task)))


def render_actions(task: str, seed: int, actions, cfg: SimEvalConfig | None = None) -> np.ndarray:
    """The frames the evaluation env renders from ``reset(seed)`` while executing ``actions`` open loop: uint8
    (len(actions) + 1, S, S, 3), the first observation then one frame per action (a stored episode's layout)."""
    env = _make_eval_env(task, cfg or SimEvalConfig())
    try:
        frame = env.reset(seed=int(seed))
        frames = [frame.rgb]
        for action in actions:
            frame, *_ = env.step(action)
            frames.append(frame.rgb)
    finally:
        env.close()
    return np.stack(frames)


def _check_action_dim(env, policy, task: str, cfg: SimEvalConfig) -> None:
    if env.action_dim != policy.config.action_dim:
        raise ValueError(f"{task}: env actions are {env.action_dim}-D ({cfg.control_mode}), "
                         f"policy predicts {policy.config.action_dim}-D")


def _episode(env, policy_kind: str, policy, task: str, seed: int, cfg: SimEvalConfig, encoder,
             policy_name: str) -> dict:
    """One evaluation episode from ``env.reset(seed)`` -> its row. Fully determined by (policy, task, seed, cfg)."""
    task_idx = task_index_of(policy.config, task)
    k = executed_actions(cfg.execute_steps, policy.config.chunk)
    t0 = time.perf_counter()
    frame = env.reset(seed=int(seed))
    steps, success, done, sim_s, enc_s, calls = 0, False, False, 0.0, 0.0, 0
    while not done and not success:
        chunk, e = _observe(policy_kind, policy, frame, encoder, cfg, task_idx)
        enc_s += e
        calls += 1
        for action in chunk[:k]:
            ts = time.perf_counter()
            frame, _reward, done, info = env.step(action)
            sim_s += time.perf_counter() - ts
            steps += 1
            success = success or bool(info["success"])
            if done or success:
                break
    logger.info("%s %s seed %d: success=%s steps=%d", policy_name, task, seed, success, steps)
    return {"policy": policy_name, "task": task, "seed": int(seed), "success": bool(success), "steps": steps,
            "seconds": time.perf_counter() - t0, "sim_seconds": sim_s, "encode_seconds": enc_s,
            "policy_calls": calls}


def evaluate_in_sim(policy_kind: str, policy, task: str, n_episodes: int, seeds: Sequence[int],
                    cfg: SimEvalConfig | None = None, encoder=None, policy_name: str | None = None) -> pd.DataFrame:
    """Run ``policy`` for ``n_episodes`` episodes of ``task`` (episode i uses ``seeds[i]``), in this process.

    policy_kind: "image" (BCResNetPolicy: uint8 frame -> chunk) | "token" (TokenPolicy: DINO tokens -> chunk; needs
    ``encoder``). Returns one row per episode: ``policy, task, seed, success, steps, seconds, sim_seconds,
    encode_seconds, policy_calls``. Several policies and tasks on several cores: :func:`evaluate_many_in_sim`.
    """
    cfg = cfg or SimEvalConfig()
    _check_args(policy_kind, encoder, n_episodes, seeds)
    name = policy_name or type(policy).__name__
    with Progress(n_episodes, f"sim eval {name} on {task}", unit="episode") as bar:
        return pd.DataFrame(_episodes_in_process(policy_kind, policy, task, n_episodes, seeds, cfg, encoder, name,
                                                 bar, _SuccessCount()))


class _SuccessCount:
    """Successes among the episodes so far, shown after the progress numbers (``success=3/10``)."""

    def __init__(self) -> None:
        self.wins = self.runs = 0

    def add(self, row: dict, bar: Progress) -> None:
        self.wins, self.runs = self.wins + int(row["success"]), self.runs + 1
        bar.set_postfix(success=f"{self.wins}/{self.runs}")
        bar.update(1)


def _episodes_in_process(policy_kind: str, policy, task: str, n_episodes: int, seeds: Sequence[int],
                         cfg: SimEvalConfig, encoder, name: str, bar: Progress, count: _SuccessCount) -> list[dict]:
    """The rows of :func:`evaluate_in_sim`, each episode counted on ``bar``."""
    policy = policy.cpu().eval()
    env = _make_eval_env(task, cfg)
    rows = []
    try:
        _check_action_dim(env, policy, task, cfg)
        for seed in list(seeds)[:n_episodes]:
            rows.append(_episode(env, policy_kind, policy, task, seed, cfg, encoder, name))
            count.add(rows[-1], bar)
    finally:
        env.close()
    return rows


def _check_args(policy_kind: str, encoder, n_episodes: int, seeds: Sequence[int]) -> None:
    if policy_kind not in POLICY_KINDS:
        raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {policy_kind!r}")
    if policy_kind == "token" and encoder is None:
        raise ValueError("token policies need the DINO encoder the feature cache was built with")
    if len(seeds) < n_episodes:
        raise ValueError(f"need {n_episodes} seeds, got {len(seeds)}")


def _episode_in_worker(name: str, task: str, seed: int, cfg: SimEvalConfig) -> dict:
    """:func:`_episode` in a ``sim.parallel`` worker: the policies come with the pool's payload, one env per
    (task, cfg) is kept alive across jobs."""
    from rla_pipeline.sim.parallel import cached, worker_state

    kind, policy = worker_state()["payload"][name]
    env = cached(f"env:{task}:{cfg}", lambda: _make_eval_env(task, cfg))
    _check_action_dim(env, policy, task, cfg)
    return _episode(env, kind, policy, task, seed, cfg, None, name)


def evaluate_many_in_sim(policies: dict[str, tuple[str, object]], tasks: Sequence[str], n_episodes: int,
                         seeds: Sequence[int], cfg: SimEvalConfig | None = None, encoder=None) -> pd.DataFrame:
    """Every policy (name -> (kind, model)) on every task, ``n_episodes`` seeds each; rows ordered by task, policy
    (dict order), seed. ``cfg.workers`` > 1 runs the episodes of image policies in worker processes (the
    policies are pickled to them once); token policies (they need ``encoder``) always run in this process."""
    cfg = cfg or SimEvalConfig()
    for kind, _ in policies.values():
        _check_args(kind, encoder, n_episodes, seeds)
    parallel = cfg.workers > 1 and all(kind == "image" for kind, _ in policies.values())
    if cfg.workers > 1 and not parallel:
        logger.info("token policies need the DINO encoder: evaluating in-process (evaluation.sim.workers ignored)")
    # one progress bar / rate-limited log line over every episode of every policy and task (utils/progress.py)
    bar = Progress(len(tasks) * len(policies) * n_episodes, "sim eval", unit="episode")
    count = _SuccessCount()
    with bar:
        if not parallel:
            frames = [pd.DataFrame(_episodes_in_process(kind, model, task, n_episodes, seeds, cfg, encoder, name,
                                                        bar, count))
                      for task in tasks for name, (kind, model) in policies.items()]
            return pd.concat(frames, ignore_index=True)
        from rla_pipeline.sim.parallel import SimPool, ordered_map

        payload = {name: (kind, model.cpu().eval()) for name, (kind, model) in policies.items()}
        jobs = [(f"{name} on {task} seed {int(seed)}", (name, task, int(seed), cfg))
                for task in tasks for name in policies for seed in list(seeds)[:n_episodes]]
        with SimPool(cfg.workers, payload=payload) as pool:
            # all jobs queued at once (window = all): evaluation keeps every episode, nothing is speculative
            rows = []
            for r in ordered_map(pool, _episode_in_worker, jobs, window=len(jobs)):
                logger.info("%s %s seed %d: success=%s steps=%d", r["policy"], r["task"], r["seed"], r["success"],
                            r["steps"])  # workers' own log records do not reach the parent's handlers
                rows.append(r)
                count.add(r, bar)  # results come back in job order: the count is of the first episodes
        return pd.DataFrame(rows)


def sim_steps_per_second(task: str, cfg: SimEvalConfig, encoder=None, n_steps: int = 20, seed: int = 0) -> dict[str, float]:
    """Real simulator speed on this machine: zero actions for ``n_steps`` steps, each rendered; with ``encoder``
    every frame is also DINO-encoded (what a token policy re-planning every step pays)."""
    from rla_pipeline.sim.envs import SimEnvConfig, make_env

    env = make_env(SimEnvConfig(task=task, image_size=cfg.image_size, control_mode=cfg.control_mode,
                                with_mask=cfg.with_mask))
    try:
        env.reset(seed=seed)
        zero = np.zeros(env.action_dim, np.float32)
        sim_s = enc_s = 0.0
        for _ in range(n_steps):
            t0 = time.perf_counter()
            frame, _, done, _ = env.step(zero)
            sim_s += time.perf_counter() - t0
            if encoder is not None:
                t0 = time.perf_counter()
                encoder.encode(frame.rgb[None], None if frame.mask is None else frame.mask[None])
                enc_s += time.perf_counter() - t0
            if done:
                env.reset(seed=seed)
    finally:
        env.close()
    out = {"sim_render_steps_per_s": n_steps / sim_s}
    if encoder is not None:
        out["sim_render_encode_steps_per_s"] = n_steps / (sim_s + enc_s)
    return out
