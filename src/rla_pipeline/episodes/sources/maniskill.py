"""Simulated episodes from ManiSkill 3: expert demos, actionless expert videos and "play" with actions.

``simulate_episodes(cfg, kind, store)`` rolls out, per task, a scripted expert (``kind="demo"`` and
``"actionless"``) or the play policy (``kind="play"``) and writes each episode to the ``EpisodeStore``.

* Episode ids are deterministic: ``f"{task}-{kind}-s{seed:07d}"``. Every kind draws its seeds from its own range
  (demo 0.., actionless 1_000_000.., play 2_000_000.., plus ``cfg.seed * 10_000``), so kinds never share an
  initial state.
* ``recipe_digest`` = sha256 of the settings that shape one episode (task, kind, seed, image size, control mode,
  mask, step limits, noise, code version). An episode already stored with the same digest is not simulated
  again; failed demo attempts are remembered in ``<store>/.sim_rejected/`` so a re-run repeats none of them.
* Demos and actionless episodes keep successes only: attempts continue with new seeds until the quota is met or
  ``max_attempt_factor * quota`` attempts were made. Every attempt gets a row (the pipeline reports the rate).

Frame/action alignment (see docs/simulation.md): an episode of T frames holds the first observation and the
observation after each of the T-1 actions. Row t = frame t and the action applied after observing it; the last
row carries the *hold* action (zero motion, gripper unchanged), which is never executed. ``reward[t]`` is the
reward of applying action t (NaN on the last row); ``success[t]`` says whether frame t is a success state.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rla_pipeline.episodes.format import Episode, EpisodeMeta, EpisodeStore, make_steps
from rla_pipeline.sim.envs import check_step_limits, step_limit
from rla_pipeline.utils.atomic import atomic_write_text
from rla_pipeline.utils.config import from_dict
from rla_pipeline.utils.hashing import json_digest

logger = logging.getLogger(__name__)

#: Bump when a change in the simulation code changes the episodes it makes (forces re-generation).
# 2: Panda-stick actions padded to the Panda's 4-wide layout (sim/envs.py); 3: the scene is rebuilt on every reset
# (SimEnvConfig.fresh_reset: an episode no longer depends on the episodes simulated before it in the same env);
# 4: videos stored lossless (the decoded frames are the rendered ones, the pixels policies see in evaluation)
SIM_RECIPE_VERSION = "maniskill-sim/4"
KIND_SEED_BASE = {"demo": 0, "actionless": 1_000_000, "play": 2_000_000}
SEEDS_PER_CONFIG_SEED = 10_000
REJECTED_DIR = ".sim_rejected"
ROW_COLUMNS = ["episode_id", "task", "kind", "source", "seed", "success", "kept", "status", "reason", "num_frames",
               "path"]
ACTION_ALIGNMENT = (
    "row t: frame t and the action applied after observing it; last row: hold action (zero motion, gripper "
    "unchanged), never executed; reward[t]: reward of action t (NaN on the last row)"
)


@dataclass
class SimulationConfig:
    """What to simulate (the ``ingestion.simulation`` parameter block).

    Attributes:
        tasks: ManiSkill env ids, e.g. ["PushCube-v1", "PullCube-v1", "PokeCube-v1"].
        image_size: rendered frames are image_size x image_size.
        control_mode: ManiSkill controller; the scripted policies need "pd_ee_delta_pos".
        with_mask: store a foreground mask (robot + task objects) per frame.
        demos_per_task: successful expert episodes with actions to keep per task.
        task_demos: per-task demo counts that override ``demos_per_task``, e.g. {"PullCube-v1": 32}: demos of
            the short cube tasks cost ~40 simulated steps, PushT's ~250.
        play_per_task: play episodes (random object-touching motion, actions kept) per task.
        actionless_per_task: successful expert episodes stored without actions/proprio per task.
        max_steps: maximum number of actions per episode, one limit for every task (an episode has at most
            max_steps + 1 frames); None = each task's limit in ``sim.envs.TASK_MAX_STEPS``, the table evaluation
            uses too (cube tasks 50, RollBall 100, PullCubeTool 150, PushT 300).
        task_max_steps: per-task step limits that override ``max_steps`` and the table, e.g. {"PushT-v1": 150}.
            ``steps_for(task)`` is the limit; it is part of the recipe digest.
        extra_steps_after_success: actions still taken (the expert holds still) after the first success frame.
        play_noise: std of the Gaussian noise on the play policy's normalised actions.
        demo_noise: std of the noise on the expert's actions (demos and actionless); 0 = clean expert.
        max_attempt_factor: at most this many attempts per wanted demo/actionless episode.
        seed: shifts every seed range (different seed -> different initial states).
        workers: simulator processes (``sim.parallel``); 1 = in this process. With more, a task's seeds are
            attempted speculatively in seed order, at most ``workers`` ahead, and the first ``quota`` successes
            in seed order are kept: the same episodes (byte-identical) and rejection records as workers=1, the
            parent writes them; a few attempts past the quota are simulated and thrown away.
    """

    tasks: list[str] = field(default_factory=lambda: ["PushCube-v1", "PullCube-v1", "PokeCube-v1"])
    image_size: int = 128
    control_mode: str = "pd_ee_delta_pos"
    with_mask: bool = True
    demos_per_task: int = 12
    task_demos: dict[str, int] = field(default_factory=dict)
    play_per_task: int = 8
    actionless_per_task: int = 12
    max_steps: int | None = None
    task_max_steps: dict[str, int] = field(default_factory=dict)
    extra_steps_after_success: int = 5
    play_noise: float = 0.5
    demo_noise: float = 0.0
    max_attempt_factor: int = 3
    seed: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if int(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]
        self.tasks = list(self.tasks)
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"duplicate tasks in {self.tasks}")
        for name in ("demos_per_task", "play_per_task", "actionless_per_task", "extra_steps_after_success"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.task_max_steps = check_step_limits(self.max_steps, self.task_max_steps, "simulation")
        self.task_demos = {str(k): int(v) for k, v in dict(self.task_demos or {}).items()}
        if any(v < 0 for v in self.task_demos.values()):
            raise ValueError(f"task_demos must be >= 0, got {self.task_demos}")
        if int(self.max_attempt_factor) < 1:
            raise ValueError(f"max_attempt_factor must be >= 1, got {self.max_attempt_factor}")
        if self.play_noise < 0 or self.demo_noise < 0:
            raise ValueError("play_noise and demo_noise must be >= 0")
        if not 0 <= int(self.seed) < 100:
            raise ValueError(f"seed must be in [0, 100) (seed ranges of kinds must not overlap), got {self.seed}")
        for kind in KIND_SEED_BASE:
            for task in [None, *self.task_demos]:
                if self.attempts(kind, task) > SEEDS_PER_CONFIG_SEED:
                    raise ValueError(f"too many {kind} episodes per task (> {SEEDS_PER_CONFIG_SEED} attempts)")

    @classmethod
    def from_dict(cls, d: dict | None) -> "SimulationConfig":
        return from_dict(cls, d, where="simulation")

    def steps_for(self, task: str) -> int:
        """The step limit of ``task``: ``task_max_steps[task]``, else ``max_steps``, else ``TASK_MAX_STEPS[task]``."""
        limit = step_limit(task, self.max_steps, self.task_max_steps)
        if limit is None:
            raise ValueError(f"no step limit for {task!r} (not in sim.envs.TASK_MAX_STEPS): set "
                             "ingestion.simulation.max_steps or task_max_steps")
        return limit

    def quota(self, kind: str, task: str | None = None) -> int:
        """Episodes of ``kind`` to keep for ``task`` (``task_demos`` overrides the demo count per task)."""
        if kind == "demo" and task in self.task_demos:
            return self.task_demos[task]
        return {"demo": self.demos_per_task, "play": self.play_per_task, "actionless": self.actionless_per_task}[kind]

    def attempts(self, kind: str, task: str | None = None) -> int:
        q = self.quota(kind, task)
        return q if kind == "play" else q * int(self.max_attempt_factor)

    def seeds(self, kind: str, task: str | None = None) -> range:
        start = KIND_SEED_BASE[kind] + int(self.seed) * SEEDS_PER_CONFIG_SEED
        return range(start, start + self.attempts(kind, task))


def episode_id(task: str, kind: str, seed: int) -> str:
    return f"{task}-{kind}-s{seed:07d}"


def recipe_digest(cfg: SimulationConfig, task: str, kind: str, seed: int) -> str:
    """sha256 of everything that shapes one episode (not the quotas: more demos must not redo old ones)."""
    from importlib.metadata import version  # not `import mani_skill`: that loads sapien before ensure_vulkan()

    recipe = {
        "version": SIM_RECIPE_VERSION, "mani_skill": version("mani_skill"), "task": task,
        "kind": kind, "seed": int(seed), "image_size": int(cfg.image_size), "control_mode": cfg.control_mode,
        "with_mask": bool(cfg.with_mask), "max_steps": cfg.steps_for(task),
        "extra_steps_after_success": int(cfg.extra_steps_after_success),
        "noise": float(cfg.play_noise if kind == "play" else cfg.demo_noise),
    }
    return json_digest(recipe)


@dataclass
class Rollout:
    """One simulated episode in memory: T frames, T actions (the last one the hold action)."""

    rgb: np.ndarray  # uint8 (T, H, W, 3)
    mask: np.ndarray | None  # bool (T, H, W)
    proprio: np.ndarray  # float32 (T, P)
    actions: np.ndarray  # float32 (T, A)
    rewards: np.ndarray  # float32 (T,), NaN on the last row
    success: np.ndarray  # bool (T,): frame t is a success state
    success_step: int | None  # first frame index that is a success state


def hold_action(env, last_action: np.ndarray | None) -> np.ndarray:
    """Zero motion; a Panda gripper (last dim of 4/8-dim actions) keeps its last command."""
    action = np.zeros(env.action_dim, dtype=np.float32)
    if last_action is not None and env.robot == "panda" and env.action_dim in (4, 8):
        action[-1] = last_action[-1]
    return action


def rollout(env, policy, seed: int, max_steps: int, extra_steps_after_success: int) -> Rollout:
    """Run ``policy`` in ``env`` from ``env.reset(seed)``; stops ``extra_steps_after_success`` after success."""
    frame = env.reset(seed)
    policy.reset(env)
    rgb, mask, proprio, actions, rewards = [frame.rgb], [frame.mask], [frame.proprio], [], []
    success = [env.success()]
    success_step = 0 if success[0] else None
    for _ in range(max_steps):
        if success_step is not None and len(actions) >= success_step + extra_steps_after_success:
            break
        action = np.asarray(policy.act(env), dtype=np.float32)
        frame, reward, _, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        rgb.append(frame.rgb)
        mask.append(frame.mask)
        proprio.append(frame.proprio)
        success.append(bool(info["success"]))
        if success[-1] and success_step is None:
            success_step = len(success) - 1
    actions.append(hold_action(env, actions[-1] if actions else None))
    rewards.append(np.nan)
    return Rollout(
        rgb=np.stack(rgb), mask=None if mask[0] is None else np.stack(mask), proprio=np.stack(proprio),
        actions=np.stack(actions).astype(np.float32), rewards=np.asarray(rewards, dtype=np.float32),
        success=np.asarray(success, dtype=bool), success_step=success_step,
    )


def build_episode(cfg: SimulationConfig, env, task: str, kind: str, seed: int, digest: str, ro: Rollout,
                  policy_name: str) -> Episode:
    """Turn a rollout into an ``Episode`` (actionless: action/proprio null, action_dim None)."""
    eid = episode_id(task, kind, seed)
    t, h, w, _ = ro.rgb.shape
    cam = env.cfg.camera
    actionless = kind == "actionless"
    meta = EpisodeMeta(
        episode_id=eid, task=task, kind=kind, source="maniskill", fps=env.fps, height=h, width=w, num_frames=t,
        cameras=[cam], robot=env.robot, control_mode=env.control_mode,
        action_dim=None if actionless else env.action_dim, proprio_dim=None if actionless else env.proprio_dim,
        success=ro.success_step is not None, seed=int(seed), has_mask=ro.mask is not None, recipe_digest=digest,
        extra={"policy": policy_name, "proprio": "qpos: the robot's joint positions after each frame's physics step",
               "success_step": ro.success_step, "success_at_end": bool(ro.success[-1]),
               "action_alignment": ACTION_ALIGNMENT, "sim_recipe_version": SIM_RECIPE_VERSION},
    )
    done = np.zeros(t, dtype=bool)
    done[-1] = True
    steps = make_steps(
        meta.episode_index, task, env.fps, t, actions=None if actionless else ro.actions,
        proprio=None if actionless else ro.proprio, rewards=ro.rewards, success=ro.success, done=done,
    )
    return Episode(meta=meta, frames={cam: ro.rgb}, steps=steps,
                   masks={cam: ro.mask} if ro.mask is not None else None)


def _rejected_path(store: EpisodeStore, eid: str) -> Path:
    return Path(store.root) / REJECTED_DIR / f"{eid}.json"


def _known_rejection(store: EpisodeStore, eid: str, digest: str) -> dict | None:
    path = _rejected_path(store, eid)
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("recipe_digest") == digest else None


def _attempt(cfg: SimulationConfig, env, task: str, kind: str, seed: int, digest: str
             ) -> tuple[Episode | None, str, int]:
    """Simulate one (task, kind, seed) -> (episode or None when a demo/actionless attempt failed, reason, frames).
    Fully determined by its arguments (the env is reset with ``seed``, the policy's rng is seeded from it)."""
    from rla_pipeline.sim.experts import make_expert

    rng = np.random.default_rng([int(seed), list(KIND_SEED_BASE).index(kind)])
    if kind == "play":
        policy, policy_name = make_expert(task, noise=cfg.play_noise, rng=rng, play=True), "play"
    else:
        policy, policy_name = make_expert(task, noise=cfg.demo_noise, rng=rng), "scripted_expert"
    ro = rollout(env, policy, seed, cfg.steps_for(task), cfg.extra_steps_after_success)
    if kind != "play" and ro.success_step is None:
        return None, f"expert failed within {cfg.steps_for(task)} steps", len(ro.rgb)
    return build_episode(cfg, env, task, kind, seed, digest, ro, policy_name), "", len(ro.rgb)


def _env_config(cfg: SimulationConfig, task: str):
    from rla_pipeline.sim.envs import SimEnvConfig

    return SimEnvConfig(task=task, image_size=cfg.image_size, control_mode=cfg.control_mode,
                        with_mask=cfg.with_mask, max_episode_steps=cfg.steps_for(task))


def _attempt_in_worker(cfg: SimulationConfig, task: str, kind: str, seed: int, digest: str
                       ) -> tuple[Episode | None, str, int]:
    """:func:`_attempt` in a ``sim.parallel`` worker, with one env per task (and env config) kept alive."""
    from rla_pipeline.sim.envs import make_env
    from rla_pipeline.sim.parallel import cached

    ecfg = _env_config(cfg, task)
    env = cached(f"env:{ecfg}", lambda: make_env(ecfg))
    return _attempt(cfg, env, task, kind, seed, digest)


def simulate_episodes(cfg: SimulationConfig, kind: str, store: EpisodeStore, progress: bool = True) -> pd.DataFrame:
    """Simulate ``kind`` ("demo" | "play" | "actionless") episodes for every task in ``cfg`` into ``store``.

    Returns one row per attempt (``ROW_COLUMNS``): ``kept`` whether the episode is in the store, ``status``
    "written" (simulated now) / "exists" (same recipe already stored) / "skipped" (failed demo, not stored),
    ``success``, ``reason`` and ``num_frames``. ``cfg.workers`` > 1 simulates in worker processes with the
    same result (see :class:`SimulationConfig`); episodes are written here, in seed order, atomically.
    """
    from contextlib import nullcontext

    from rla_pipeline.sim.experts import make_expert

    if kind not in KIND_SEED_BASE:
        raise ValueError(f"kind must be one of {sorted(KIND_SEED_BASE)}, got {kind!r}")
    if not isinstance(cfg, SimulationConfig):
        cfg = SimulationConfig.from_dict(cfg)
    rows: list[dict] = []
    quota = max(cfg.quota(kind, t) for t in cfg.tasks) if cfg.tasks else 0
    if kind != "play" and quota > 0:
        for task in cfg.tasks:
            make_expert(task)  # fail fast (NotImplementedError naming the task) before any simulation
    if cfg.workers > 1 and quota > 0:
        from rla_pipeline.sim.parallel import SimPool

        pool_cm = SimPool(cfg.workers)
    else:
        pool_cm = nullcontext(None)
    with pool_cm as pool:
        for task in cfg.tasks:
            rows.extend(_simulate_task(cfg, kind, task, store, pool, progress))
    out = pd.DataFrame(rows, columns=ROW_COLUMNS)
    if len(out):
        out = out.astype({"kept": bool, "seed": "int64", "num_frames": "int64"})
    logger.info("simulated %s: %s", kind, out["status"].value_counts().to_dict() if len(out) else "nothing")
    return out


def _simulate_task(cfg: SimulationConfig, kind: str, task: str, store: EpisodeStore, pool, progress: bool
                   ) -> list[dict]:
    """The rows of one task (see :func:`simulate_episodes`); ``pool``: a ``SimPool`` or None (in-process)."""
    from rla_pipeline.sim.envs import make_env

    quota = cfg.quota(kind, task)
    seeds = cfg.seeds(kind, task)
    # What the store already says about each seed (decided up front: nothing else writes these ids meanwhile).
    known: dict[int, tuple[str, dict]] = {}
    digests = {int(s): recipe_digest(cfg, task, kind, s) for s in seeds}
    for seed in seeds:
        eid = episode_id(task, kind, seed)
        if store.has(eid, digests[seed]):
            known[seed] = ("exists", {})
        elif (rec := _known_rejection(store, eid, digests[seed])) is not None:
            known[seed] = ("rejected", rec)
    results = None
    if pool is not None:
        from rla_pipeline.sim.parallel import ordered_map

        # Speculative: the seeds still to simulate, in seed order, at most `workers` ahead of the loop below.
        jobs = ((f"{task} {kind} seed {s}", (cfg, task, kind, int(s), digests[s])) for s in seeds if s not in known)
        results = ordered_map(pool, _attempt_in_worker, jobs)
    env = None
    kept = 0
    rows: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=quota, desc=f"{task} {kind}", leave=False)
    try:
        for seed in seeds:
            if kept >= quota:
                break
            eid = episode_id(task, kind, seed)
            digest = digests[seed]
            row = dict(episode_id=eid, task=task, kind=kind, source="maniskill", seed=int(seed),
                       path=str(store.episode_dir(eid)))
            status, rec = known.get(seed, (None, None))
            if status == "exists":
                meta = store.read_meta(eid)
                rows.append(dict(row, success=meta.success, kept=True, status="exists", reason="",
                                 num_frames=meta.num_frames))
                kept += 1
                bar and bar.update(1)
                continue
            if status == "rejected":
                rows.append(dict(row, success=False, kept=False, status="skipped", reason=rec["reason"],
                                 num_frames=rec["num_frames"]))
                continue
            if results is not None:
                episode, reason, num_frames = next(results)
            else:
                if env is None:
                    env = make_env(_env_config(cfg, task))
                episode, reason, num_frames = _attempt(cfg, env, task, kind, seed, digest)
            if episode is None:
                atomic_write_text(_rejected_path(store, eid), json.dumps(
                    {"recipe_digest": digest, "reason": reason, "num_frames": num_frames}))
                rows.append(dict(row, success=False, kept=False, status="skipped", reason=reason,
                                 num_frames=num_frames))
                continue
            store.write(episode, lossless=True)  # training frames = the rendered pixels evaluation feeds policies
            rows.append(dict(row, success=bool(episode.meta.success), kept=True, status="written", reason="",
                             num_frames=num_frames))
            kept += 1
            bar and bar.update(1)
    finally:
        if results is not None:
            results.close()  # cancels the speculative attempts still queued
        if bar is not None:
            bar.close()
        if env is not None:
            env.close()
    if kept < quota:
        logger.warning("%s %s: only %d of %d episodes succeeded in %d attempts", task, kind, kept, quota, len(seeds))
    return rows


def simulation_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per task and kind: attempts, kept episodes, expert success rate over attempts."""
    if not len(rows):
        return pd.DataFrame(columns=["task", "kind", "attempts", "kept", "success_rate"])
    g = rows.groupby(["task", "kind"])
    return pd.DataFrame({
        "attempts": g.size(), "kept": g["kept"].sum(), "success_rate": g["success"].mean(),
    }).reset_index()


__all__ = ["SimulationConfig", "simulate_episodes", "rollout", "episode_id", "recipe_digest", "simulation_summary",
           "ACTION_ALIGNMENT"]
