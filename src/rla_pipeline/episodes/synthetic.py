"""Small procedurally rendered episodes (a gripper dot pushing a block) for tests and benchmarks.

They are real episodes in the project's format (mp4 + Parquet + meta) with learnable dynamics: the action
moves the gripper, the gripper pushes the block on contact. No simulator needed, so the test suite can
exercise every stage quickly. Source ``"synthetic"``; never mixed into the default pipeline's data.

``write_lerobot_v3`` writes a generated dataset in LeRobot's v3.0 layout instead (the importer's input), for the
import tests, ``scripts/bench_import.py`` and the README's quick start.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

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


LEROBOT_FPS = 10  # frame rate of the LeRobot v3.0 datasets that write_lerobot_v3 writes


def write_lerobot_v3(root, n_episodes: int, frames: int = 8, action_dim: int = 3, robot: str = "bench_arm",
                     episodes_per_file: int = 100, size: int = 16, tasks=("pick the cube", "push the cube"),
                     seed: int = 0) -> Path:
    """A LeRobot v3.0 dataset folder as LeRobot writes it: ``episodes_per_file`` episodes back to back in each
    data parquet and each mp4 (h264 here; LeRobot defaults to AV1), ``meta/episodes`` rows pointing into them with
    ``from_timestamp``; ``action`` of width ``action_dim`` and a 2-d ``observation.state``. Frames are a moving
    bright square on a grey level per episode, so neighbouring frames differ."""
    import json
    from fractions import Fraction

    import av
    import pandas as pd

    root = Path(root)
    rng = np.random.default_rng(seed)
    key = "observation.images.front"
    for d in ("meta/episodes/chunk-000", "data/chunk-000", f"videos/{key}/chunk-000"):
        (root / d).mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": "v3.0", "robot_type": robot, "total_episodes": n_episodes,
        "total_frames": n_episodes * frames, "total_tasks": len(tasks), "chunks_size": 1000, "fps": LEROBOT_FPS,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "timestamp": {"dtype": "float32", "shape": [1]}, "frame_index": {"dtype": "int64", "shape": [1]},
            "episode_index": {"dtype": "int64", "shape": [1]}, "index": {"dtype": "int64", "shape": [1]},
            "task_index": {"dtype": "int64", "shape": [1]},
            "observation.state": {"dtype": "float32", "shape": [2]},
            "action": {"dtype": "float32", "shape": [action_dim]},
            key: {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"]},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    pd.DataFrame({"task_index": list(range(len(tasks)))}, index=pd.Index(list(tasks), name="task")).to_parquet(
        root / "meta" / "tasks.parquet")
    eps, index = [], 0
    for f, first in enumerate(range(0, n_episodes, episodes_per_file)):
        ids = range(first, min(first + episodes_per_file, n_episodes))
        tables = []
        with av.open(str(root / "videos" / key / "chunk-000" / f"file-{f:03d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(LEROBOT_FPS))
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "bf": "0"}
            start_in_file = 0
            for e in ids:
                level = int(rng.integers(30, 200))
                pos = rng.integers(0, size // 2, size=2)
                acts = rng.normal(size=(frames, action_dim)).astype(np.float32)
                for t in range(frames):
                    img = np.full((size, size, 3), level, np.uint8)
                    y, x = (pos + t) % (size - 4)
                    img[y:y + 4, x:x + 4] = 255
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                tables.append(pd.DataFrame({
                    "timestamp": (np.arange(frames) / LEROBOT_FPS).astype(np.float32),
                    "frame_index": np.arange(frames, dtype=np.int64),
                    "episode_index": np.full(frames, e, np.int64),
                    "index": np.arange(index, index + frames, dtype=np.int64),
                    "task_index": np.full(frames, e % len(tasks), np.int64),
                    "observation.state": [np.array([e, t], np.float32) for t in range(frames)],
                    "action": list(acts),
                }))
                eps.append({
                    "episode_index": e, "tasks": [tasks[e % len(tasks)]], "length": frames,
                    "data/chunk_index": 0, "data/file_index": f,
                    "dataset_from_index": index, "dataset_to_index": index + frames,
                    f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": f,
                    f"videos/{key}/from_timestamp": start_in_file / LEROBOT_FPS,
                    f"videos/{key}/to_timestamp": (start_in_file + frames) / LEROBOT_FPS,
                    "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                })
                index += frames
                start_in_file += frames
            for packet in stream.encode():
                container.mux(packet)
        pd.concat(tables, ignore_index=True).to_parquet(root / "data" / "chunk-000" / f"file-{f:03d}.parquet",
                                                        index=False)
    pd.DataFrame(eps).to_parquet(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet", index=False)
    return root
