"""How far stored training frames are from the pixels the simulator shows a policy (session 5's codec finding).

Simulates one expert demo, renders the same states again by replaying its actions from its seed in the evaluation
env (``rl.sim_eval``), and prints, per storage option, the mean |stored - rendered| in grey levels beside the mean
change one simulator step makes, and the bytes per episode:

    python scripts/bench_codec_gap.py [--task PullCube-v1] [--image-size 64]

Recipes 1-3 stored yuv420p at crf 15; recipe 4 stores lossless RGB (``EpisodeStore.write(lossless=True)``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="PullCube-v1")
    ap.add_argument("--image-size", type=int, default=64)
    a = ap.parse_args(argv)
    from rla_pipeline.episodes.format import EpisodeStore, episode_actions
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig, simulate_episodes
    from rla_pipeline.episodes.video import encode_video, iter_video_frames
    from rla_pipeline.rl.sim_eval import SimEvalConfig, render_actions

    tmp = Path(tempfile.mkdtemp(prefix="codec_gap_"))
    store = EpisodeStore(tmp / "episodes")
    sim = SimulationConfig(tasks=[a.task], image_size=a.image_size, demos_per_task=1, actionless_per_task=0,
                           play_per_task=0, extra_steps_after_success=0)
    rows = simulate_episodes(sim, "demo", store, progress=False)
    eid = rows.loc[rows["kept"], "episode_id"].item()
    meta, actions = store.read_meta(eid), episode_actions(store.read_steps(eid))
    rendered = render_actions(a.task, meta.seed, actions[:-1], SimEvalConfig(image_size=a.image_size))
    step_change = np.abs(np.diff(rendered.astype(np.float32), axis=0)).mean()
    print(f"\n{a.task}, {len(rendered)} frames at {a.image_size} px (demo seed {meta.seed}); one simulator step "
          f"changes a frame by {step_change:.2f} grey levels on average\n")
    print("| storage | mean abs(stored - rendered) | bytes per episode |\n| --- | --- | --- |")
    for name, kw in [("yuv420p crf 15 (recipes 1-3)", {}), ("lossless RGB (recipe 4)", {"lossless": True})]:
        path = encode_video(rendered, tmp / f"{len(kw)}.mp4", fps=meta.fps, **kw)
        back = np.concatenate(list(iter_video_frames(path)))
        print(f"| {name} | {np.abs(back.astype(np.float32) - rendered).mean():.2f} | {path.stat().st_size} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
