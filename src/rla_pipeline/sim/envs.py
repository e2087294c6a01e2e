"""A small, single-process ManiSkill 3 environment wrapper for data generation and policy evaluation.

One ``SimEnv`` wraps one ManiSkill env on the CPU physics backend (``num_envs=1``) and turns its batched torch
observations into plain numpy ``Frame``s: an RGB camera image, a foreground mask (robot + task objects, from the
segmentation camera) and the robot joint positions.

``mani_skill`` is imported lazily inside ``make_env`` after ``ensure_vulkan()``, so importing this module is cheap.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from rla_pipeline.sim.vulkan import ensure_vulkan

logger = logging.getLogger(__name__)

#: Tasks this project generates data for and evaluates on (robot and default control mode are ManiSkill's).
SUPPORTED_TASKS = ("PushCube-v1", "PullCube-v1", "PokeCube-v1", "PushT-v1", "RollBall-v1", "PullCubeTool-v1")
#: ManiSkill 3's default robot of each task (what ``SimEnv.robot`` reports; checked in tests/sim): the tables name it.
TASK_ROBOTS = {"PushCube-v1": "panda", "PullCube-v1": "panda", "PokeCube-v1": "panda", "PushT-v1": "panda_stick",
               "RollBall-v1": "panda", "PullCubeTool-v1": "panda"}
#: Scene actors that are background, not "task objects" (masked out before DINO).
BACKGROUND_ACTORS = ("ground", "table-workspace")
#: Episode step limit of each supported task, the one table for demos, play and evaluation alike (an env built
#: without ``max_episode_steps``, ``SimulationConfig`` and ``SimEvalConfig`` unless their ``max_steps`` /
#: ``task_max_steps`` override it): at or above the longest scripted-expert demo (success step + the 5
#: ``extra_steps_after_success``) with a margin, measured in docs/simulation.md: cube tasks succeed after <= 42
#: steps (ManiSkill's registered 50 kept: a failing evaluation episode runs the whole limit), RollBall after 55-85
#: (registered 80), PullCubeTool's "beside" route after up to 131 (registered 100), PushT after up to 277
#: (registered 100). SimEnv gives the limit to ManiSkill, so it may exceed the registered one.
TASK_MAX_STEPS: dict[str, int] = {"PushCube-v1": 50, "PullCube-v1": 50, "PokeCube-v1": 50, "PushT-v1": 300,
                                  "RollBall-v1": 100, "PullCubeTool-v1": 150}


def step_limit(task: str, max_steps: int | None = None, overrides: Mapping[str, int] | None = None
                   ) -> int | None:
    """A task's episode step limit: ``overrides[task]``, else ``max_steps`` (one limit for every task), else
    ``TASK_MAX_STEPS[task]``; None for a task outside the table (``SimEnv``: ManiSkill's registered limit)."""
    if overrides and task in overrides:
        return int(overrides[task])
    if max_steps is not None:
        return int(max_steps)
    return TASK_MAX_STEPS.get(task)


def check_step_limits(max_steps: int | None, overrides: Mapping[str, int] | None, where: str) -> dict[str, int]:
    """Validate a config's ``max_steps`` / ``task_max_steps`` pair (each >= 1) -> the overrides as a plain dict."""
    if max_steps is not None and int(max_steps) < 1:
        raise ValueError(f"{where}.max_steps must be >= 1 or None, got {max_steps}")
    out = {str(k): int(v) for k, v in dict(overrides or {}).items()}
    if any(v < 1 for v in out.values()):
        raise ValueError(f"{where}.task_max_steps must be >= 1, got {out}")
    return out


@dataclass
class SimEnvConfig:
    """How to build one simulated environment.

    Attributes:
        task: ManiSkill env id, one of ``SUPPORTED_TASKS`` (others may work but are untested).
        image_size: camera width = height in pixels.
        control_mode: ManiSkill controller, e.g. ``pd_ee_delta_pos`` (Panda: 4-dim = xyz delta + gripper;
            panda_stick: 3-dim) or ``pd_joint_delta_pos``.
        with_mask: also render the segmentation camera and return a foreground mask.
        max_episode_steps: episode step limit, given to ManiSkill's time limit, so it can be above or below the
            task's registered limit; None = ``TASK_MAX_STEPS[task]`` (for a task outside it the registered limit).
        camera: which sensor camera to return.
        shared_action_layout: give panda_stick (PushT) the Panda's action layout: one extra, ignored column
            where the Panda has its gripper (pd_ee_delta_pos: 3 -> 4 = xyz delta + unused). One policy then
            acts in every paper task with one action width (BC, WMRL and their datasets need one width); the
            last column of PushT's recorded actions is always 0. False = ManiSkill's own width.
        fresh_reset: rebuild the scene on every ``reset`` (ManiSkill's ``reconfigure``), so an episode depends on
            its seed only and not on the episodes this env ran before: after a plain reset PhysX carries state
            over (measured: PullCube seed 2 after seed 0 drifts 1e-3 rad in qpos from the same seed in a fresh
            env). Worker processes (sim/parallel.py) rely on it to reproduce the in-process episodes bit for
            bit. Costs ~0.2 s per reset (a plain one ~0.05 s).
    """

    task: str
    image_size: int = 128
    control_mode: str = "pd_ee_delta_pos"
    with_mask: bool = True
    max_episode_steps: int | None = None
    camera: str = "base_camera"
    shared_action_layout: bool = True
    fresh_reset: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.endswith(("-v0", "-v1", "-v2")):
            raise ValueError(f"task must be a ManiSkill env id like 'PushCube-v1', got {self.task!r}")
        if not 16 <= int(self.image_size) <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {self.max_episode_steps}")


@dataclass
class Frame:
    """One observation.

    Attributes:
        rgb: uint8 (H, W, 3) camera image.
        mask: bool (H, W) foreground (robot + task objects incl. goal markers) or None when masks are off.
        proprio: float32 (P,) robot joint positions (qpos; P = 9 for Panda, 7 for panda_stick).
    """

    rgb: np.ndarray
    mask: np.ndarray | None
    proprio: np.ndarray


class SimEnv:
    """ManiSkill env with numpy frames. Build with ``make_env``.

    Attributes:
        task, robot, control_mode: as configured / ManiSkill's default robot for the task.
        action_dim, proprio_dim: sizes of actions (``native_action_dim`` + the padded column of a shared
            layout, see ``SimEnvConfig.shared_action_layout``) and of ``Frame.proprio``.
        fps: the control frequency in Hz (one ``step`` = 1/fps seconds).
        max_steps: episode step limit, the one ManiSkill's time limit truncates at (``done`` becomes True at
            this step).
        unwrapped: ManiSkill's env (privileged state for scripted experts).
    """

    def __init__(self, cfg: SimEnvConfig):
        ensure_vulkan()
        import gymnasium as gym
        import mani_skill.envs  # noqa: F401  (registers the envs)
        from mani_skill.utils.registration import REGISTERED_ENVS

        if cfg.task not in REGISTERED_ENVS:
            raise ValueError(f"unknown ManiSkill task {cfg.task!r}; supported here: {SUPPORTED_TASKS}")
        self.cfg = cfg
        self.task = cfg.task
        self.control_mode = cfg.control_mode
        obs_mode = "rgb+segmentation" if cfg.with_mask else "rgb"
        registered = REGISTERED_ENVS[cfg.task].max_episode_steps
        self.max_steps = int(step_limit(cfg.task, cfg.max_episode_steps) or registered or 100)
        # ManiSkill's own time-limit wrapper takes gym.make's max_episode_steps (it reads it from gym.make's frame
        # and drops gymnasium's TimeLimit); without it, episodes are truncated at the registered limit.
        self._env = gym.make(
            cfg.task,
            obs_mode=obs_mode,
            sim_backend="cpu",
            render_backend="cpu",
            num_envs=1,
            control_mode=cfg.control_mode,
            sensor_configs=dict(width=int(cfg.image_size), height=int(cfg.image_size)),
            max_episode_steps=self.max_steps,
        )
        limits = _time_limits(self._env)
        if limits != [self.max_steps]:
            self._env.close()
            raise RuntimeError(f"{cfg.task}: the simulator's time limits are {limits}, not the configured "
                               f"{self.max_steps} steps (ManiSkill's TimeLimitWrapper changed?)")
        self.unwrapped = self._env.unwrapped
        self.fps = float(self.unwrapped.control_freq)
        self.robot = str(self.unwrapped.robot_uids)
        self.native_action_dim = int(self.unwrapped.single_action_space.shape[0])
        # panda_stick is the Panda arm without a gripper: in every control mode its actions are the Panda's minus
        # the last (gripper) column, so padding that column back gives both robots one layout
        pad = 1 if cfg.shared_action_layout and self.robot == "panda_stick" else 0
        self.action_dim = self.native_action_dim + pad
        self._action_low = np.r_[self.unwrapped.single_action_space.low, -np.ones(pad)].astype(np.float32)
        self._action_high = np.r_[self.unwrapped.single_action_space.high, np.ones(pad)].astype(np.float32)
        self.proprio_dim = int(self.unwrapped.agent.robot.get_qpos().shape[-1])
        self._foreground_ids: np.ndarray | None = None
        self._t = 0

    # ------------------------------------------------------------------ observations
    def _foreground_lut(self) -> np.ndarray:
        """bool lookup table indexed by segmentation id: True for robot links and task actors."""
        id_map = self.unwrapped.segmentation_id_map
        lut = np.zeros(max(id_map) + 2, dtype=bool)
        for seg_id, obj in id_map.items():
            lut[seg_id] = getattr(obj, "name", "") not in BACKGROUND_ACTORS
        lut[0] = False  # 0 = nothing (sky / empty background)
        return lut

    def _frame(self, obs: dict) -> Frame:
        cam = obs["sensor_data"][self.cfg.camera]
        rgb = cam["rgb"][0].cpu().numpy().astype(np.uint8, copy=False)  # (H, W, 3)
        mask = None
        if self.cfg.with_mask:
            if self._foreground_ids is None:
                self._foreground_ids = self._foreground_lut()
            seg = cam["segmentation"][0, ..., 0].cpu().numpy().astype(np.int64)  # (H, W)
            seg = np.clip(seg, 0, len(self._foreground_ids) - 1)
            mask = self._foreground_ids[seg]
        proprio = obs["agent"]["qpos"][0].cpu().numpy().astype(np.float32)
        return Frame(rgb=np.ascontiguousarray(rgb), mask=mask, proprio=proprio)

    # ------------------------------------------------------------------ control
    def reset(self, seed: int) -> Frame:
        """Reset to the episode given by ``seed`` (same seed -> bit-identical episode); returns the first frame."""
        if self.cfg.fresh_reset:
            obs, _ = self._env.reset(seed=int(seed), options={"reconfigure": True})
            self._foreground_ids = None  # segmentation ids belong to the rebuilt scene
        else:
            obs, _ = self._env.reset(seed=int(seed))
        self._t = 0
        return self._frame(obs)

    def step(self, action: np.ndarray) -> tuple[Frame, float, bool, dict[str, Any]]:
        """Apply ``action`` float32 (A,) (clipped to the action box) for one control step.

        Returns ``(frame, reward, done, info)``; ``done`` when the task terminates (ManiSkill: success/failure)
        or ``max_steps`` is reached; ``info["success"]`` is a bool.
        """
        action = np.asarray(action, dtype=np.float32).reshape(self.action_dim)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"non-finite action {action}")
        action = np.clip(action, self._action_low, self._action_high)
        # the padded column of a shared layout (see SimEnvConfig) is dropped here: the robot has no gripper
        obs, reward, terminated, truncated, info = self._env.step(action[None, : self.native_action_dim])
        self._t += 1
        success = bool(_scalar(info.get("success", False)))
        out_info = {"success": success, "elapsed_steps": self._t}
        done = bool(_scalar(terminated)) or bool(_scalar(truncated)) or self._t >= self.max_steps
        return self._frame(obs), float(_scalar(reward)), done, out_info

    def success(self) -> bool:
        """Whether the current state is a success (ManiSkill's ``evaluate()``)."""
        return bool(_scalar(self.unwrapped.evaluate()["success"]))

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> "SimEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _time_limits(env: Any) -> list[int]:
    """The step limits of the time-limit wrappers (gymnasium's or ManiSkill's) around ``env``, outermost first."""
    out = []
    while env is not None:
        limit = getattr(env, "__dict__", {}).get("_max_episode_steps")
        if limit is not None:
            out.append(int(limit))
        env = getattr(env, "__dict__", {}).get("env")
    return out


def _scalar(x: Any) -> Any:
    if hasattr(x, "reshape"):
        x = x.reshape(-1)[0]
    return x.item() if hasattr(x, "item") else x


def make_env(cfg: SimEnvConfig | str, **kwargs: Any) -> SimEnv:
    """Build a ``SimEnv`` from a config (or a task id plus ``SimEnvConfig`` keyword fields)."""
    if isinstance(cfg, str):
        cfg = SimEnvConfig(task=cfg, **kwargs)
    elif kwargs:
        raise TypeError("pass either a SimEnvConfig or a task id with keyword fields, not both")
    return SimEnv(cfg)
