"""Small procedurally rendered episodes (a gripper dot pushing a block) for tests and benchmarks.

They are real episodes in the project's format (mp4 + Parquet + meta) with learnable dynamics: the action
moves the gripper, the gripper pushes the block on contact. No simulator needed, so the test suite can
exercise every stage quickly. Source ``"synthetic"``; never mixed into the default pipeline's data.
"""
from __future__ import annotations

import hashlib

import numpy as np

from rla_pipeline.episodes.format import Episode, EpisodeMeta, make_steps

BACKGROUND = np.array([40, 44, 52], dtype=np.uint8)
GRIPPER = np.array([230, 200, 60], dtype=np.uint8)
BLOCK = np.array([60, 140, 230], dtype=np.uint8)


def _draw(size: int, gripper: np.ndarray, block: np.ndarray, radius: float, half: float):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    # faint floor texture so frames are not flat
    img[(((xx // 8) + (yy // 8)) % 2 == 0)] += np.array([6, 6, 6], dtype=np.uint8)
    blk = (np.abs(xx - block[0] * size) <= half * size) & (np.abs(yy - block[1] * size) <= half * size)
    grp = (xx - gripper[0] * size) ** 2 + (yy - gripper[1] * size) ** 2 <= (radius * size) ** 2
    img[blk] = BLOCK
    img[grp] = GRIPPER
    return img, blk | grp


def synthetic_episode(
    episode_id: str,
    task: str = "SyntheticPush-v0",
    kind: str = "demo",
    num_frames: int = 24,
    size: int = 64,
    seed: int = 0,
    fps: float = 20.0,
    with_mask: bool = True,
    noise: float = 0.3,
) -> Episode:
    """One episode: an expert-ish controller steers the gripper to push the block towards a goal.

    Actions are 4-D (dx, dy, 0, gripper) like ManiSkill's pd_ee_delta_pos; proprio is the gripper position (2-D).
    ``kind="actionless"`` drops actions and proprio. Same arguments give the same frames.
    """
    rng = np.random.default_rng(int(hashlib.sha1(f"{episode_id}-{seed}".encode()).hexdigest()[:8], 16))
    gripper = rng.uniform(0.15, 0.35, size=2)
    block = rng.uniform(0.4, 0.6, size=2)
    goal = rng.uniform(0.6, 0.85, size=2)
    radius, half, speed = 0.06, 0.08, 0.05
    frames, masks, actions, proprio, rewards, success = [], [], [], [], [], []
    for _t in range(num_frames):
        img, m = _draw(size, gripper, block, radius, half)
        frames.append(img)
        masks.append(m)
        direction = block - goal
        direction = direction / (np.linalg.norm(direction) + 1e-6)
        target = block + direction * (half + radius)  # behind the block, on the far side from the goal
        to_target = target - gripper
        if np.linalg.norm(to_target) > 0.03:
            move = to_target
        else:
            move = goal - block
        move = move / (np.linalg.norm(move) + 1e-6) * speed + rng.normal(0, noise * speed, size=2)
        move = np.clip(move, -speed * 1.5, speed * 1.5)
        action = np.array([move[0] / speed, move[1] / speed, 0.0, 1.0], dtype=np.float32)
        actions.append(action)
        proprio.append(gripper.astype(np.float32).copy())
        dist = float(np.linalg.norm(block - goal))
        rewards.append(-dist)
        success.append(dist < 0.05)
        # dynamics: move gripper, push block when overlapping
        gripper = np.clip(gripper + move, 0.02, 0.98)
        delta = block - gripper
        overlap = (radius + half) - np.abs(delta)
        if (overlap > 0).all():
            axis = int(np.argmin(overlap))
            block[axis] += np.sign(delta[axis]) * overlap[axis]
            block = np.clip(block, 0.05, 0.95)
    frames_arr = np.stack(frames)
    actionless = kind == "actionless"
    meta = EpisodeMeta(
        episode_id=episode_id,
        task=task,
        kind=kind,
        source="synthetic",
        fps=fps,
        height=size,
        width=size,
        num_frames=num_frames,
        cameras=["base_camera"],
        robot="synthetic_dot",
        control_mode="pd_ee_delta_pos",
        action_dim=None if actionless else 4,
        proprio_dim=None if actionless else 2,
        success=bool(success[-1]),
        seed=seed,
        has_mask=with_mask,
        recipe_digest=hashlib.sha256(f"synthetic/1|{episode_id}|{task}|{kind}|{num_frames}|{size}|{seed}|{noise}".encode()).hexdigest(),
    )
    steps = make_steps(
        meta.episode_index,
        task,
        fps,
        num_frames,
        actions=None if actionless else np.stack(actions),
        proprio=None if actionless else np.stack(proprio),
        rewards=np.asarray(rewards),
        success=np.asarray(success),
    )
    return Episode(meta=meta, frames={"base_camera": frames_arr}, steps=steps, masks={"base_camera": np.stack(masks)} if with_mask else None)


def write_synthetic_store(store, n_per_kind: int = 2, tasks=("SyntheticPush-v0",), num_frames: int = 24, size: int = 64, kinds=("demo", "play", "actionless")):
    """Fill ``store`` with a few synthetic episodes per task and kind; returns the episode ids."""
    ids = []
    for task in tasks:
        for kind in kinds:
            for i in range(n_per_kind):
                eid = f"{task}-{kind}-s{i:05d}"
                ep = synthetic_episode(eid, task=task, kind=kind, num_frames=num_frames, size=size, seed=i, noise=0.3 if kind != "play" else 1.0)
                if not store.has(eid, ep.meta.recipe_digest):
                    store.write(ep)
                ids.append(eid)
    return ids
