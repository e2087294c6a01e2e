"""Scripted experts and a "play" policy for ManiSkill tabletop tasks (``pd_ee_delta_pos`` control).

Experts read privileged state from ``env.unwrapped`` (cube / peg / goal poses, the TCP position) and steer the
end effector through a few closed-loop phases with a proportional controller. They exist to make demonstrations
and actionless videos, not to be clever: measured success rates are in ``docs/simulation.md``.

Usage::

    expert = make_expert("PushCube-v1", noise=0.0, rng=np.random.default_rng(0))
    frame = env.reset(seed); expert.reset(env)
    while not done: frame, reward, done, info = env.step(expert.act(env))

``make_expert(task, play=True)`` (or ``make_play_policy``) gives the play policy: random waypoints around the
task objects with a random gripper, so the arm touches and moves things instead of idling.
"""
from __future__ import annotations

import numpy as np

#: Metres of end-effector motion per unit of normalised ``pd_ee_delta_pos`` action (ManiSkill's Panda limits).
EE_DELTA_SCALE = 0.1
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, -1.0


def _np(x) -> np.ndarray:
    return np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x, dtype=np.float64).reshape(-1)


def tcp_position(env) -> np.ndarray:
    """(3,) world position of the tool centre point."""
    return _np(env.unwrapped.agent.tcp.pose.p)


def _has_gripper(env) -> bool:
    return env.action_dim == 4


class ScriptedPolicy:
    """Base class: ``reset(env)`` at the start of an episode, then ``act(env) -> float32 (A,)`` each step."""

    max_speed = 0.035  # metres per control step: smooth motion the PD controller tracks without overshoot

    def __init__(self, task: str, noise: float = 0.0, rng: np.random.Generator | None = None):
        self.task = task
        self.noise = float(noise)
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def reset(self, env) -> None:
        if env.control_mode != "pd_ee_delta_pos":
            raise ValueError(f"scripted policies need control_mode 'pd_ee_delta_pos', env has {env.control_mode!r}")
        self.phase = 0
        self.t = 0
        self.gripper = GRIPPER_OPEN
        self._phase_steps = 0

    def act(self, env) -> np.ndarray:
        raise NotImplementedError

    # helpers -----------------------------------------------------------------
    def _goto(self, env, target: np.ndarray, gripper: float | None = None, speed: float | None = None) -> np.ndarray:
        """Action moving the TCP towards ``target`` (3,) at most ``speed`` m/step, plus Gaussian noise."""
        delta = np.asarray(target, dtype=np.float64) - tcp_position(env)
        limit = self.max_speed if speed is None else speed
        norm = np.linalg.norm(delta)
        if norm > limit:
            delta = delta * (limit / norm)
        action = np.zeros(env.action_dim, dtype=np.float64)
        action[:3] = delta / EE_DELTA_SCALE
        if self.noise > 0:
            action[:3] += self.noise * self.rng.normal(size=3)
        if _has_gripper(env):
            action[3] = self.gripper if gripper is None else gripper
        self.t += 1
        self._phase_steps += 1
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _next_phase(self) -> None:
        self.phase += 1
        self._phase_steps = 0


class PushToGoalExpert(ScriptedPolicy):
    """PushCube / PullCube: hover behind the cube (seen from the goal), lower, push it along the cube->goal line.

    Pulling is pushing from the far side, so both tasks share this controller; the gripper stays closed
    (a flat pusher) and the push direction is re-computed every step from the current cube position.
    """

    hover_z = 0.08
    push_z = 0.018
    standoff = 0.045  # TCP distance behind the cube centre before pushing

    def _object(self, env):
        return env.unwrapped.obj

    def _goal(self, env) -> np.ndarray:
        return _np(env.unwrapped.goal_region.pose.p)

    def act(self, env) -> np.ndarray:
        cube = _np(self._object(env).pose.p)
        goal = self._goal(env)
        d = goal[:2] - cube[:2]
        dist = np.linalg.norm(d)
        d = d / max(dist, 1e-6)
        behind = np.r_[cube[:2] - d * self.standoff, self.push_z]
        tcp = tcp_position(env)
        self.gripper = GRIPPER_CLOSED
        if self.phase == 0:  # fly over to the pre-push point, high enough to clear the cube
            target = np.r_[behind[:2], self.hover_z]
            if np.linalg.norm(tcp[:2] - target[:2]) < 0.01:
                self._next_phase()
            return self._goto(env, target)
        if self.phase == 1:  # descend behind the cube
            if tcp[2] < self.push_z + 0.01:
                self._next_phase()
            return self._goto(env, behind)
        if env.success():  # hold still once the cube is in the goal region
            return self._goto(env, tcp, speed=0.0)
        # push: aim a little past the contact point along the cube->goal line, correcting lateral drift
        lateral = (tcp[:2] - behind[:2]) - np.dot(tcp[:2] - behind[:2], d) * d
        target = np.r_[tcp[:2] + d * 0.03 - lateral, self.push_z]
        return self._goto(env, target, speed=0.025)


class PokeCubeExpert(ScriptedPolicy):
    """PokeCube: grasp the peg near its tail, bring its head behind the cube, poke the cube onto the goal, stop.

    The far cubes are near the edge of the Panda's reach at table height, so the peg is held near its tail
    (``grasp_from_tail`` metres from the end) and the push stops as soon as the cube is safely inside the goal.
    """

    hover_z = 0.07
    grasp_z = 0.022
    carry_z = 0.03
    grasp_from_tail = 0.035
    max_speed = 0.045

    def act(self, env) -> np.ndarray:
        u = env.unwrapped
        peg = _np(u.peg.pose.p)
        head = _np(u.peg_head_pos)
        cube = _np(u.cube.pose.p)
        goal = _np(u.goal_region.pose.p)
        tcp = tcp_position(env)
        half = float(u.cube_half_size)
        axis = (head - peg)[:2] / max(np.linalg.norm((head - peg)[:2]), 1e-6)
        grasp = peg[:2] - axis * (float(u.peg_half_length) - self.grasp_from_tail)
        if self.phase == 0:  # above the grasp point, gripper open
            self.gripper = GRIPPER_OPEN
            target = np.r_[grasp, self.hover_z]
            if np.linalg.norm(tcp[:2] - target[:2]) < 0.008:
                self._next_phase()
            return self._goto(env, target)
        if self.phase == 1:  # down to the peg
            target = np.r_[grasp, self.grasp_z]
            if tcp[2] < self.grasp_z + 0.006:
                self._next_phase()
            return self._goto(env, target)
        if self.phase == 2:  # close the gripper and wait for it
            self.gripper = GRIPPER_CLOSED
            if self._phase_steps >= 3:
                self._next_phase()
            return self._goto(env, np.r_[grasp, self.grasp_z], speed=0.0)
        self.gripper = GRIPPER_CLOSED
        offset = head - tcp  # peg head relative to the hand (the peg may have slipped a little)
        d = goal[:2] - cube[:2]
        d = d / max(np.linalg.norm(d), 1e-6)
        if self.phase == 3:  # bring the head behind the cube on the cube->goal line
            head_target = np.r_[cube[:2] - d * (half + 0.03), self.carry_z + offset[2]]
            target = head_target - offset
            target[2] = self.carry_z
            if np.linalg.norm(head[:2] - head_target[:2]) < 0.008:
                self._next_phase()
            return self._goto(env, target)
        if self.phase == 4:  # push until the cube centre sits on the goal
            to_goal = goal[:2] - cube[:2]
            if np.dot(to_goal, d) < 0.02 and np.linalg.norm(to_goal) < float(u.goal_radius) - 0.015:
                self._next_phase()
                return self._goto(env, tcp, speed=0.0)
            lateral_err = (cube[:2] - head[:2]) - np.dot(cube[:2] - head[:2], d) * d
            target = np.r_[tcp[:2] + d * 0.03 + lateral_err, self.carry_z]
            return self._goto(env, target, speed=0.03)
        return self._goto(env, tcp, speed=0.0)  # hold still: success needs a static robot


class PlayPolicy(ScriptedPolicy):
    """Exploration that touches things: random waypoints around a task object, random gripper, noisy motion.

    Each segment picks a waypoint within ~8 cm of a random task object (sometimes at table height so the
    hand sweeps through it), moves there with noise ``noise`` and occasionally toggles the gripper.
    """

    max_speed = 0.04

    def reset(self, env) -> None:
        if env.control_mode != "pd_ee_delta_pos":
            raise ValueError(f"the play policy needs control_mode 'pd_ee_delta_pos', env has {env.control_mode!r}")
        super().reset(env)
        self._objects = [a for a in _task_objects(env)]
        self._waypoint = None

    def _new_waypoint(self, env) -> np.ndarray:
        if self._objects:
            obj = self._objects[self.rng.integers(len(self._objects))]
            centre = _np(obj.pose.p)
        else:
            centre = tcp_position(env)
        offset = self.rng.uniform(-0.08, 0.08, size=2)
        z = self.rng.choice([0.015, 0.02, 0.04, self.rng.uniform(0.02, 0.12)])
        if self.rng.random() < 0.3:
            self.gripper = -self.gripper
        self._segment_steps = int(self.rng.integers(6, 15))
        return np.r_[centre[:2] + offset, z]

    def act(self, env) -> np.ndarray:
        if self._waypoint is None or self._phase_steps >= self._segment_steps or np.linalg.norm(
            tcp_position(env) - self._waypoint
        ) < 0.01:
            self._waypoint = self._new_waypoint(env)
            self._phase_steps = 0
        return self._goto(env, self._waypoint)


def _task_objects(env) -> list:
    u = env.unwrapped
    names = ("obj", "cube", "peg", "ball", "tee", "l_shape_tool")
    return [getattr(u, n) for n in names if getattr(u, n, None) is not None and hasattr(getattr(u, n), "pose")]


_EXPERTS = {
    "PushCube-v1": PushToGoalExpert,
    "PullCube-v1": PushToGoalExpert,
    "PokeCube-v1": PokeCubeExpert,
}


def expert_tasks() -> tuple[str, ...]:
    """Tasks that have a scripted expert."""
    return tuple(_EXPERTS)


def make_expert(task: str, noise: float = 0.0, rng: np.random.Generator | None = None, play: bool = False):
    """Scripted expert for ``task`` (or the play policy when ``play``); ``noise`` = std of action noise.

    Raises:
        NotImplementedError: no scripted expert for ``task`` (e.g. PushT-v1, RollBall-v1, PullCubeTool-v1).
    """
    if play:
        return PlayPolicy(task, noise=noise, rng=rng)
    if task not in _EXPERTS:
        raise NotImplementedError(
            f"no scripted expert for {task!r} yet (available: {sorted(_EXPERTS)}); play episodes work for any task"
        )
    return _EXPERTS[task](task, noise=noise, rng=rng)


def make_play_policy(task: str, noise: float = 0.5, rng: np.random.Generator | None = None) -> PlayPolicy:
    return PlayPolicy(task, noise=noise, rng=rng)
