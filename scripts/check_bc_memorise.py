"""End-to-end trust check of the BC path (session 5): can a BC-ResNet that memorised ONE demo succeed from that
demo's own seed in the real simulator?

Simulates one expert demo (stored as ingestion stores it), trains BC-ResNet on it alone (the project's
``stages.bc.train_bc_policy``, no augmentation) and evaluates it from the demo's seed with ``rl.sim_eval`` executing
whole chunks of 8 and 4 of 8. Prints the training loss, the success of each, and the action error of the policy on
the stored (training) frames vs on the frames the simulator renders for the same states.
With lossy video storage (recipes 1-3) the memorised policy erred 7.7x more on rendered frames and failed at 8 of 8;
with lossless storage (recipe 4) both errors are equal and it succeeds (docs/simulation.md). ~2-10 min on 2 cores.

    python scripts/check_bc_memorise.py [--steps 300] [--task PullCube-v1] [--out /tmp/bc_memorise]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--task", default="PullCube-v1")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from rla_pipeline.episodes.format import EpisodeStore, episode_actions
    from rla_pipeline.episodes.sources.maniskill import SimulationConfig, simulate_episodes
    from rla_pipeline.rl.sim_eval import SimEvalConfig, evaluate_in_sim, render_actions
    from rla_pipeline.stages.bc import train_bc_policy

    out = Path(a.out or tempfile.mkdtemp(prefix="bc_memorise_"))
    store = EpisodeStore(out / "episodes")
    sim = SimulationConfig(tasks=[a.task], image_size=64, demos_per_task=1, actionless_per_task=0, play_per_task=0,
                           extra_steps_after_success=0)
    simulate_episodes(sim, "demo", store, progress=False)
    index = store.index()
    eid = index["episode_id"].iloc[0]
    meta = store.read_meta(eid)
    params = {"episodes": {"n_labelled_per_task": 1, "n_val_per_task": 0, "max_actionless_per_task": 0},
              "policy": {"backbone": "resnet10t", "image_size": 64, "chunk": 8, "hidden": 256},
              "loss": {"random_shift": 0}, "decoded_copies": False,
              "trainer": {"max_steps": a.steps, "batch_size": 32, "lr": 1e-3, "warmup_steps": 20, "schedule": "cosine",
                          "log_every": 50, "val_every": 10**9, "checkpoint_every": 10**9}}
    policy, hist = train_bc_policy(store, index, [a.task], params, 0, "cpu", "bc_memorise")
    losses = hist.loc[hist["split"] == "train", "loss"]
    print(f"\n{a.task} demo {eid} ({meta.num_frames} frames, recipe {meta.recipe_digest[:12]}): BC loss "
          f"{losses.iloc[0]:.4g} -> {losses.iloc[-1]:.4g} in {a.steps} steps")
    for execute in (8, 4):
        row = evaluate_in_sim("image", policy, a.task, 1, [meta.seed],
                              SimEvalConfig(image_size=64, execute_steps=execute)).iloc[0]
        print(f"executing {execute} of 8 per chunk from the demo's seed: success={row['success']} steps={row['steps']}")
    stored, actions = store.read_frames(eid), episode_actions(store.read_steps(eid))
    rendered = render_actions(a.task, meta.seed, actions[:-2], SimEvalConfig(image_size=64))
    err = {"stored": [], "rendered": []}
    policy.eval()
    with torch.no_grad():
        for t, live in enumerate(rendered):
            target = actions[t:t + 8]
            for name, img in (("stored", stored[t]), ("rendered", live)):
                pred = policy.act(torch.from_numpy(np.ascontiguousarray(img))[None], task=torch.tensor([0]))[0]
                err[name].append(np.abs(pred[:len(target)].numpy() - target).mean())
    print(f"action L1 to the demo's chunks: on stored frames {np.mean(err['stored']):.4f}, on rendered frames "
          f"{np.mean(err['rendered']):.4f} (mean |action| {np.abs(actions[:-1]).mean():.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
