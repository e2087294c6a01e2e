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

from rla_pipeline.sim.envs import TASK_MAX_STEPS

#: Metres of end-effector motion per unit of normalised ``pd_ee_delta_pos`` action (ManiSkill's Panda limits).
EE_DELTA_SCALE = 0.1
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, -1.0


def _np(x) -> np.ndarray:
    return np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x, dtype=np.float64).reshape(-1)


def tcp_position(env) -> np.ndarray:
    """(3,) world position of the tool centre point."""
    return _np(env.unwrapped.agent.tcp.pose.p)


def _world_to_base_xy(env, delta: np.ndarray) -> np.ndarray:
    """Express a world-frame xyz delta in the robot base frame, which ``pd_ee_delta_pos`` actions use.

    The base only ever turns about z here (RollBall's Panda faces -y, every other task's faces +x); for an
    unrotated base the delta is returned unchanged (bit-identical actions for the older tasks).
    """
    q = _np(env.unwrapped.agent.robot.pose.q)  # wxyz
    yaw = 2.0 * np.arctan2(q[3], q[0])
    if abs(np.sin(yaw)) < 1e-6 and np.cos(yaw) > 0:
        return delta
    c, s = np.cos(yaw), np.sin(yaw)
    out = delta.copy()
    out[0], out[1] = c * delta[0] + s * delta[1], -s * delta[0] + c * delta[1]
    return out


def _has_gripper(env) -> bool:
    """Whether the robot has a gripper (Panda); panda_stick's padded last column stays 0 (SimEnv ignores it)."""
    return getattr(env, "robot", "panda") != "panda_stick" and env.action_dim == 4


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
        action[:3] = _world_to_base_xy(env, delta) / EE_DELTA_SCALE
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


class RollBallExpert(ScriptedPolicy):
    """RollBall: grasp the ball, swing it along the ball->goal line and let go at speed: it rolls into the goal.

    The goal is 1.2-1.7 m away, far outside the Panda's reach, so the ball has to roll there; success needs the
    ball's centre within 10 cm of the goal's once (the episode ends there), so rolling through counts. Pushing
    with the closed hand does not aim: a flat finger face sends the ball along the face's normal (always about
    -y, the orientation is fixed in ``pd_ee_delta_pos``), whatever the hand's direction. The ball (7 cm) fits
    the open gripper (8 cm), so the hand grasps it, accelerates along the aimed direction and opens: the ball
    leaves with the hand's velocity. Contact is light, so the straight line holds within a few degrees.
    """

    hover_z = 0.10  # the hand clears the ball (top at 7 cm); higher points near the base are IK-singular
    grasp_z = 0.035  # the ball's centre
    carry_z = 0.04  # barely off the table while accelerating (no rolling friction on the way)
    accel_steps = 8
    launch_x = (-0.25, 0.05)  # world x range of the launch spot (the robot base is at x = -0.1)
    launch_y = 0.7  # near the base: the arm has ~0.4 m of run-up before the edge of its reach (y ~ 0.3 at this height)
    release_speed = 0.1  # commanded metres per step at release (the PD arm lags: the ball leaves at ~1 m/s)
    max_speed = 0.07

    def reset(self, env) -> None:
        super().reset(env)
        self.dir = None

    def act(self, env) -> np.ndarray:
        u = env.unwrapped
        ball = _np(u.ball.pose.p)
        goal = _np(u.goal_region.pose.p)
        tcp = tcp_position(env)
        if self.phase == 0:  # above the ball, gripper open
            self.gripper = GRIPPER_OPEN
            target = np.r_[ball[:2], self.hover_z]
            if np.linalg.norm(tcp - target) < 0.01:
                self._next_phase()
            return self._goto(env, target)
        if self.phase == 1:  # down around the ball
            if tcp[2] < self.grasp_z + 0.005:
                self._next_phase()
            return self._goto(env, np.r_[ball[:2], self.grasp_z])
        if self.phase == 2:  # close on it
            self.gripper = GRIPPER_CLOSED
            if self._phase_steps >= 4:
                self.start = ball.copy()
                self._next_phase()
            return self._goto(env, np.r_[ball[:2], self.grasp_z], speed=0.0)
        if self.phase == 3:  # carry it back to a launch spot near the base: launched from where it
            # lies, the arm reaches the edge of its workspace while accelerating and stalls before the release
            spot = np.r_[np.clip(self.start[0], *self.launch_x), self.launch_y, self.carry_z]
            if np.linalg.norm(tcp - spot) < 0.015:
                self._next_phase()
            return self._goto(env, spot)
        if self.phase == 4:  # aim from where the ball is now, accelerate along the ball->goal line
            if self.dir is None:
                d = goal[:2] - ball[:2]
                self.dir = d / max(np.linalg.norm(d), 1e-6)
                self.line_from = tcp[:2].copy()
            speed = self.release_speed * min(1.0, (self._phase_steps + 1) / self.accel_steps)
            if self._phase_steps >= self.accel_steps:
                self._next_phase()
            # stay on the launch line: the arm's own drift (towards the base's axis) would bend the shot
            rel = tcp[:2] - self.line_from
            lateral = rel - np.dot(rel, self.dir) * self.dir
            return self._goto(env, np.r_[tcp[:2] + self.dir * speed - lateral, self.carry_z], speed=speed)
        if self.phase == 5:  # let go while still moving at release speed, then stop
            self.gripper = GRIPPER_OPEN
            if self._phase_steps < 3:
                return self._goto(env, np.r_[tcp[:2] + self.dir * self.release_speed, self.carry_z],
                                  speed=self.release_speed)
        return self._goto(env, np.r_[tcp[:2], self.hover_z], speed=0.02)  # lift clear and wait


class PullCubeToolExpert(ScriptedPolicy):
    """PullCubeTool: grasp the L-tool's handle, get the hook behind the cube, pull the cube in with it.

    The tool's frame sits at the handle's near end, the handle runs along +x (0..0.20 m, 5 cm wide) and the hook
    occupies x in [0.15, 0.20], y in [0, 0.10] of the tool frame. The Panda's closing axis is world y, so the
    hand grasps the handle across its width. Success: the cube < 0.6 m from the robot base (pulled to ``pull_to``).

    Two routes, chosen from the initial state:

    * **over** (the hand reaches the spot): grasp ``grasp_x`` from the handle's end (near the centre of mass, so
      the hook does not droop), lift the tool over the cube, lower the hook ``hook_gap`` behind it with the cube
      between handle and hook tip, pull towards the base.
    * **beside** (far cubes: the hand position of the over route is more than ``over_reach`` from the base, where
      the gripper-down Panda of ``pd_ee_delta_pos`` cannot go at table height): carry the tool (same grasp) to the
      cube's side, hook tip ``side`` short of the cube, as far forward as the arm reaches, put it down, re-grasp it
      ``end_grasp`` from its near end (a tool lying on the table does not droop, however it is held), slide it
      forward along the table until the hook is past the cube, slide it sideways so the cube goes between handle
      and hook, pull. Held near its end the tool reaches ~7.5 cm further than held at its middle.
    """

    hover_z = 0.10
    grasp_z = 0.025
    lift_z = 0.10  # tool bottom (2.5 cm below its centre) clears the 4 cm cube with margin for a slight tilt
    carry_z = 0.027
    grasp_x = 0.10  # near the tool's centre of mass (x ~ 0.14): a grasp at the far end lets the hook droop
    hook_gap = 0.012
    pull_to = 0.5
    max_speed = 0.05
    # beside route
    over_reach = 0.80  # hand distance from the base (m) beyond which the over route is not tried
    carry_reach = 0.76  # how far (from the base) the hand carries the tool to the cube's side
    side_z = 0.06  # carry height beside the cube (the tool only has to clear the table)
    side = 0.14  # cube y - tool y while sliding forward: hook tip (tool y 0.10) 1 cm clear of the turned cube
    side_gap = 0.016  # hook inner face this far behind the cube's far face (sideways slide must not touch it)
    end_grasp = 0.025

    def reset(self, env) -> None:
        super().reset(env)
        self.route = None
        self._last_tcp = None

    def _stalled(self, tcp: np.ndarray) -> bool:
        """True when the hand moved < 2 mm since the last step (at the edge of its reach), after 4 steps."""
        last, self._last_tcp = self._last_tcp, tcp.copy()
        return last is not None and self._phase_steps > 4 and np.linalg.norm(tcp - last) < 0.002

    def act(self, env) -> np.ndarray:
        u = env.unwrapped
        tool = _np(u.l_shape_tool.pose.p)
        cube = _np(u.cube.pose.p)
        tcp = tcp_position(env)
        base = _np(u.agent.robot.get_links()[0].pose.p)
        half = float(u.cube_half_size)
        inner = float(u.handle_length - u.hook_length)  # hook inner face, tool x
        if self.route is None:
            hand = np.r_[cube[0] + half + self.hook_gap - inner + self.grasp_x, cube[1] - 0.0625]
            self.route = "beside" if np.linalg.norm(hand - base[:2]) > self.over_reach else "over"
        grasp = np.r_[tool[0] + self.grasp_x, tool[1]]
        if self.phase == 0:  # above the handle, gripper open
            self.gripper = GRIPPER_OPEN
            target = np.r_[grasp, self.hover_z]
            if np.linalg.norm(tcp[:2] - target[:2]) < 0.008:
                self._next_phase()
            return self._goto(env, target)
        if self.phase == 1:  # down to the handle
            if tcp[2] < self.grasp_z + 0.006:
                self._next_phase()
            return self._goto(env, np.r_[grasp, self.grasp_z])
        if self.phase == 2:  # close and wait
            self.gripper = GRIPPER_CLOSED
            if self._phase_steps >= 4:
                self._next_phase()
            return self._goto(env, np.r_[grasp, self.grasp_z], speed=0.0)
        if self.route == "beside":
            return self._beside(env, tool, cube, tcp, base, half, inner)
        self.gripper = GRIPPER_CLOSED
        offset = tcp - tool  # live grasp offset (the tool may slip a little in the hand)
        # tool origin that puts the hook's inner face behind the cube and the cube mid-way across the hook
        tool_target = np.r_[cube[0] + half + self.hook_gap - inner, cube[1] - 0.0625]
        hand_target = tool_target + offset[:2]
        if self.phase == 3:  # lift the tool
            if tcp[2] > self.lift_z - 0.01:
                self._next_phase()
            return self._goto(env, np.r_[tcp[:2], self.lift_z])
        if self.phase == 4:  # carry it over: hook beyond the cube
            if np.linalg.norm(tool[:2] - tool_target) < 0.01:
                self._next_phase()
            return self._goto(env, np.r_[hand_target, self.lift_z])
        if self.phase == 5:  # lower the hook behind the cube
            if tcp[2] < self.carry_z + 0.008:
                self._next_phase()
            return self._goto(env, np.r_[hand_target, self.carry_z])
        return self._pull(env, cube, tcp, base, self.carry_z)

    def _pull(self, env, cube, tcp, base, z) -> np.ndarray:
        """Pull towards the base until the cube is well inside the success radius, then hold still."""
        if np.linalg.norm(cube[:2] - base[:2]) < self.pull_to:
            return self._goto(env, tcp, speed=0.0)
        to_base = base[:2] - cube[:2]
        to_base /= max(np.linalg.norm(to_base), 1e-6)
        return self._goto(env, np.r_[tcp[:2] + to_base * 0.04, z], speed=0.03)

    def _beside(self, env, tool, cube, tcp, base, half, inner) -> np.ndarray:
        final = np.r_[cube[0] + half + self.side_gap - inner, cube[1] - 0.0625]  # tool origin, cube hooked
        side_y = cube[1] - self.side
        if self.phase < 7:
            self.gripper = GRIPPER_CLOSED
        if self.phase == 3:  # lift just clear of the table (beside the cube nothing is in the way)
            if tcp[2] > self.side_z - 0.01:
                self._next_phase()
            return self._goto(env, np.r_[tcp[:2], self.side_z])
        if self.phase == 4:  # carry beside the cube, as far forward as needed and reachable
            dy = side_y + (tcp[1] - tool[1]) - base[1]
            x_max = base[0] + np.sqrt(max(self.carry_reach ** 2 - dy ** 2, 0.0))
            target = np.r_[min(final[0] + self.grasp_x, x_max), side_y + (tcp[1] - tool[1]), self.side_z]
            if np.linalg.norm(tcp[:2] - target[:2]) < 0.01 or self._stalled(tcp):
                self._next_phase()
            return self._goto(env, target)
        if self.phase == 5:  # put it down
            if tcp[2] < self.grasp_z + 0.006 or self._phase_steps > 8:
                self._next_phase()
            return self._goto(env, np.r_[tcp[:2], self.grasp_z])
        if self.phase == 6:  # let go and rise
            self.gripper = GRIPPER_OPEN
            if self._phase_steps >= 2 and tcp[2] > self.side_z - 0.01:
                self._next_phase()
            return self._goto(env, np.r_[tcp[:2], self.side_z] if self._phase_steps >= 2 else tcp)
        end = np.r_[tool[0] + self.end_grasp, tool[1]]
        if self.phase == 7:  # over the tool's near end
            self.gripper = GRIPPER_OPEN
            if np.linalg.norm(tcp[:2] - end) < 0.008:
                self._next_phase()
            return self._goto(env, np.r_[end, self.side_z])
        if self.phase == 8:  # down to it
            if tcp[2] < self.grasp_z + 0.006:
                self._next_phase()
            return self._goto(env, np.r_[end, self.grasp_z])
        if self.phase == 9:  # close on it
            self.gripper = GRIPPER_CLOSED
            if self._phase_steps >= 3:
                self._next_phase()
            return self._goto(env, np.r_[end, self.grasp_z], speed=0.0)
        self.gripper = GRIPPER_CLOSED
        offset = tcp[:2] - tool[:2]
        if self.phase == 10:  # slide forward along the table, hook tip beside the cube
            if abs(tool[0] - final[0]) < 0.006 or self._phase_steps > 25:
                self._next_phase()
            return self._goto(env, np.r_[np.r_[final[0], side_y] + offset, self.grasp_z], speed=0.04)
        if self.phase == 11:  # slide sideways: the cube goes between handle and hook tip
            if abs(tool[1] - final[1]) < 0.006 or self._phase_steps > 20:
                self._next_phase()
            return self._goto(env, np.r_[final + offset, self.grasp_z], speed=0.03)
        return self._pull(env, cube, tcp, base, self.grasp_z)


def _tee_edges(step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Contact points (N, 2) on the outside of PushT's tee and their outward normals (N, 2), tee frame (COM).

    The tee (ManiSkill's ``create_tee``): a bar x in [-0.1, 0.1], y in [-0.0625, -0.0125] and a stem
    x in [-0.025, 0.025], y in [-0.0125, 0.1375], origin at the centre of mass.
    """
    pts, nrm = [], []

    def seg(a, b, n):
        a, b = np.asarray(a, float), np.asarray(b, float)
        k = max(2, int(np.linalg.norm(b - a) / step) + 1)
        for t in np.linspace(0.1, 0.9, k):  # stay off the corners (the stick would slip past them)
            pts.append(a + t * (b - a))
            nrm.append(n)

    seg((-0.1, -0.0625), (0.1, -0.0625), (0, -1))  # bar, far side
    seg((-0.1, -0.0125), (-0.025, -0.0125), (0, 1))  # bar, stem side (left)
    seg((0.025, -0.0125), (0.1, -0.0125), (0, 1))  # bar, stem side (right)
    seg((-0.1, -0.0625), (-0.1, -0.0125), (-1, 0))  # bar ends
    seg((0.1, -0.0625), (0.1, -0.0125), (1, 0))
    seg((-0.025, -0.0125), (-0.025, 0.1375), (-1, 0))  # stem sides
    seg((0.025, -0.0125), (0.025, 0.1375), (1, 0))
    seg((-0.025, 0.1375), (0.025, 0.1375), (0, 1))  # stem end
    return np.asarray(pts), np.asarray(nrm, dtype=float)


#: The tee's two boxes (x0, x1, y0, y1) in its COM frame, see ``_tee_edges``.
_TEE_BOXES = np.array([[-0.1, 0.1, -0.0625, -0.0125], [-0.025, 0.025, -0.0125, 0.1375]])


def _tee_clearance(pts: np.ndarray) -> np.ndarray:
    """Distance (N,) of tee-frame points (N, 2) from the tee (0 inside)."""
    zero = np.zeros((len(pts), len(_TEE_BOXES)))
    dx = np.maximum.reduce([_TEE_BOXES[None, :, 0] - pts[:, :1], zero, pts[:, :1] - _TEE_BOXES[None, :, 1]])
    dy = np.maximum.reduce([_TEE_BOXES[None, :, 2] - pts[:, 1:], zero, pts[:, 1:] - _TEE_BOXES[None, :, 3]])
    return np.hypot(dx, dy).min(axis=1)


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _z_angle(q: np.ndarray) -> float:
    """Yaw of a wxyz quaternion that only rotates about z."""
    return float(2.0 * np.arctan2(q[3], q[0]))


class PushTExpert(ScriptedPolicy):
    """PushT (panda_stick): greedy pushes that shrink the tee's pose error, re-planned after every push.

    Each push: pick, among contact points on the tee's outline, the one whose quasi-static effect (a push along
    the inward normal moves the tee along it and turns it by the torque about the centre of mass) best matches
    the remaining error (translation to the goal and rotation, weighted ``turn_weight`` m/rad); lift the stick,
    go to ``approach`` behind the point, lower it, push ``push_gain`` x the error (clipped to ``push_len``),
    repeat. Success (ManiSkill) is >= 90 % overlap of the tee with the goal tee. The tee's friction is high
    (3), so it stops as soon as the stick leaves it and every push is quasi-static; large turns (up to pi)
    need many pushes: the task's registered 100 steps are too few, ``EXPERT_MAX_STEPS`` says how many it needs.
    """

    lift_z = 0.055  # the tee is 4 cm high
    push_z = 0.02
    approach = 0.02
    turn_weight = 0.12
    gyration = 0.06  # ~radius of gyration of the tee (m): torque -> rotation scale
    push_speed = 0.05  # faster pushes still stay quasi-static (the tee stops when the stick stops)
    max_speed = 0.09
    push_gain = 1.0  # push length per metre of remaining (weighted) error
    push_len = (0.01, 0.1)  # shortest / longest push (m): long pushes save the lift / move / lower overhead
    max_push_steps = 12  # a push that makes no progress (stick stuck on an edge) is re-planned after this
    clearance = 0.015  # a push's start point must be this far from the tee (the stick lands beside it, not on it)
    max_lower_steps = 10  # a stick that cannot get down (resting on the tee) lifts and re-plans
    # a push at lever r turns the tee by ~r / gyration^2 rad per metre (far more than the scoring's weighted
    # twist suggests): near the goal pushes are shortened to turn at most this fraction of the yaw error
    turn_damping = 0.7

    def reset(self, env) -> None:
        super().reset(env)
        self.points, self.normals = _tee_edges()
        # the stick must come down beside the tee: drop contacts whose start point (``approach`` behind the
        # contact) lies on or next to the tee, which happens next to the concave corners at the stem
        ok = _tee_clearance(self.points + self.normals * self.approach) >= self.clearance
        self.points, self.normals = self.points[ok], self.normals[ok]
        self.plan = None

    def _errors(self, env) -> tuple[np.ndarray, float, np.ndarray, float]:
        u = env.unwrapped
        tee_p, tee_th = _np(u.tee.pose.p)[:2], _z_angle(_np(u.tee.pose.q))
        goal_p, goal_th = _np(u.goal_tee.pose.p)[:2], _z_angle(_np(u.goal_tee.pose.q))
        e_th = float(np.arctan2(np.sin(goal_th - tee_th), np.cos(goal_th - tee_th)))
        return tee_p, tee_th, goal_p - tee_p, e_th

    def _choose_push(self, env) -> dict:
        tee_p, tee_th, e_p, e_th = self._errors(env)
        r = _rot(tee_th)
        c = self.points @ r.T  # contact points relative to the COM, world axes
        f = -(self.normals @ r.T)  # push directions (into the tee)
        torque = c[:, 0] * f[:, 1] - c[:, 1] * f[:, 0]
        twist = np.c_[f, torque / self.gyration * self.turn_weight]  # predicted (dx, dy, w*dtheta) per metre
        want = np.r_[e_p, self.turn_weight * e_th]
        score = twist @ want / (np.linalg.norm(twist, axis=1) * max(np.linalg.norm(want), 1e-9))
        i = int(np.argmax(score))
        err = float(np.linalg.norm(want))
        length = err * self.push_gain
        turn_per_m = abs(torque[i]) / self.gyration**2
        if turn_per_m > 1e-6:
            length = min(length, self.turn_damping * abs(e_th) / turn_per_m)
        length = float(np.clip(length, *self.push_len))
        contact = tee_p + c[i]
        return {"contact": contact, "dir": f[i], "len": length, "start": contact - f[i] * self.approach}

    def act(self, env) -> np.ndarray:
        tcp = tcp_position(env)
        if env.success():
            return self._goto(env, tcp, speed=0.0)
        if self.plan is None:
            self.plan = self._choose_push(env)
            self.stage = "lift" if tcp[2] < self.lift_z - 0.01 and self.t > 0 else "move"
            self.pushed = 0.0
        p = self.plan
        if self.stage == "lift":
            if tcp[2] > self.lift_z - 0.01:
                self.stage = "move"
            return self._goto(env, np.r_[tcp[:2], self.lift_z])
        if self.stage == "move":
            target = np.r_[p["start"], self.lift_z]
            if np.linalg.norm(tcp[:2] - target[:2]) < 0.008:
                self.stage = "lower"
            return self._goto(env, target)
        if self.stage == "lower":
            self.lower_steps = getattr(self, "lower_steps", 0) + 1
            if self.lower_steps > self.max_lower_steps:  # resting on the tee: lift, re-plan from the new state
                self.plan, self.lower_steps = None, 0
                return self._goto(env, np.r_[tcp[:2], self.lift_z])
            if tcp[2] < self.push_z + 0.006:
                self.lower_steps = 0
                self.stage = "push"
                self.push_from = tcp[:2].copy()
                self._phase_steps = 0
            return self._goto(env, np.r_[p["start"], self.push_z])
        # push along the chosen direction for approach + length, then re-plan (the stick stays down if the
        # next push starts close by; it is lifted otherwise)
        travelled = float(np.dot(tcp[:2] - self.push_from, p["dir"]))
        if travelled >= self.approach + p["len"] or self._phase_steps > self.max_push_steps:
            nxt = self._choose_push(env)
            self.plan = nxt
            self.pushed = 0.0
            self.stage = "move" if np.linalg.norm(nxt["start"] - tcp[:2]) < 0.03 else "lift"
            return self._goto(env, np.r_[tcp[:2], self.lift_z] if self.stage == "lift" else tcp)
        return self._goto(env, np.r_[tcp[:2] + p["dir"] * 0.05, self.push_z], speed=self.push_speed)


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
    "RollBall-v1": RollBallExpert,
    "PullCubeTool-v1": PullCubeToolExpert,
    "PushT-v1": PushTExpert,
}
#: Experts below their success bar: only ``make_expert(task, experimental=True)`` returns them (benchmarks, tests),
#: so demo generation does not spend its attempts on them. Empty now; kept for the next task that needs it.
_EXPERIMENTAL: dict[str, type[ScriptedPolicy]] = {}

#: Step limits the experts get: the project's one table (``sim.envs.TASK_MAX_STEPS``, also used by demos, play and
#: evaluation). Longer than the registered limit for PushT (its greedy pusher turns the tee by up to pi in short
#: pushes and succeeds after up to ~280 steps; registered 100), PullCubeTool (the "beside" route for far cubes:
#: put down, re-grasp, two slides, up to ~130; registered 100) and RollBall (55-85; registered 80).
EXPERT_MAX_STEPS: dict[str, int] = TASK_MAX_STEPS


def expert_tasks() -> tuple[str, ...]:
    """Tasks that have a scripted expert."""
    return tuple(_EXPERTS)


def make_expert(task: str, noise: float = 0.0, rng: np.random.Generator | None = None, play: bool = False,
                experimental: bool = False):
    """Scripted expert for ``task`` (or the play policy when ``play``); ``noise`` = std of action noise.

    ``experimental`` also allows experts below their success bar (none at the moment, see docs/simulation.md).

    Raises:
        NotImplementedError: no (usable) scripted expert for ``task``.
    """
    if play:
        return PlayPolicy(task, noise=noise, rng=rng)
    if experimental and task in _EXPERIMENTAL:
        return _EXPERIMENTAL[task](task, noise=noise, rng=rng)
    if task not in _EXPERTS:
        hint = " (an experimental one exists: make_expert(..., experimental=True))" if task in _EXPERIMENTAL else ""
        raise NotImplementedError(
            f"no usable scripted expert for {task!r}{hint} (available: {sorted(_EXPERTS)}); play episodes work "
            "for any task"
        )
    return _EXPERTS[task](task, noise=noise, rng=rng)


def make_play_policy(task: str, noise: float = 0.5, rng: np.random.Generator | None = None) -> PlayPolicy:
    return PlayPolicy(task, noise=noise, rng=rng)
