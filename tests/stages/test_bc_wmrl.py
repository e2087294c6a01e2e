"""The policy stages end to end on small real episodes (synthetic pushing videos, real DINO cache with random
weights, untrained tiny RLA and world model): BC, BC+RLA, token BC, WMRL and the tables run and fit together."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rla_pipeline.models.policy import BCResNetPolicy, TokenPolicy
from rla_pipeline.rl.stages import (
    ActionlessBCConfig, EvaluationConfig, WMRLConfig, eval_seeds, train_bc_stage, train_token_bc_stage,
    train_wmrl_stage,
)

TASKS = ["SynA-v0", "SynB-v0"]
TRAINER = {"max_steps": 3, "batch_size": 8, "warmup_steps": 0, "log_every": 1, "val_every": 3,
           "checkpoint_every": 100}
EPISODES = {"n_labelled_per_task": 2, "n_val_per_task": 1, "max_actionless_per_task": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.synthetic import write_synthetic_store
    from rla_pipeline.features.cache import FeatureCache
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig
    from rla_pipeline.models.rla import RLAConfig, ResidualLatentActionAutoencoder
    from rla_pipeline.models.world_model import RLAWorldModel, WorldModelConfig

    root = tmp_path_factory.mktemp("stages")
    store = EpisodeStore(root / "episodes")
    write_synthetic_store(store, n_per_kind=3, tasks=TASKS, num_frames=16, size=32, kinds=("demo", "actionless"))
    index = store.index()
    enc = DinoEncoder(EncoderConfig(image_size=28, weights="random", device="cpu"))
    cache = FeatureCache(root / "cache")
    cache.update(store, enc)
    torch.manual_seed(0)
    rla_cfg = RLAConfig(num_tokens=enc.num_tokens, token_dim=enc.token_dim, width=16, enc_depth=1, dec_depth=1,
                        heads=2, latent_tokens=2, latent_dim=4)
    rla = ResidualLatentActionAutoencoder(rla_cfg).eval()
    wm = RLAWorldModel(WorldModelConfig(num_tokens=enc.num_tokens, token_dim=enc.token_dim, action_dim=4,
                                        max_actions=8, width=16, cond_depth=1, flow_depth=1, heads=2, sample_steps=2,
                                        rla=rla_cfg), rla=rla).eval()
    return store, index, cache, rla, wm


def test_bc_and_bc_rla_stages(data):
    store, index, cache, rla, _ = data
    cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
                                        "trainer": TRAINER})
    bc, hist = train_bc_stage(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc")
    bc_rla, hist_rla = train_bc_stage(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc_rla",
                                      cache=cache, rla=rla)
    assert isinstance(bc, BCResNetPolicy) and bc.latent_head is None and bc.config.task_names == TASKS
    assert bc_rla.latent_head is not None and bc_rla.config.latent_tokens == 2
    assert "latent_l1" in hist_rla.columns and "latent_l1" not in hist.columns
    assert "val" in set(hist["split"])  # the held-out demos are the validation set
    assert bc.act(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), task=torch.tensor([1])).shape == (1, 4, 4)


def test_token_bc_then_wmrl(data):
    _, index, cache, _, wm = data
    cfg = WMRLConfig.from_dict({"episodes": EPISODES, "policy": {"hidden": 16, "token_proj": 4, "chunk": 4},
                                "bc_trainer": TRAINER, "env": {"num_envs": 4, "max_chunks": 2},
                                "ppo": {"total_env_steps": 16, "num_steps": 2, "num_minibatches": 2,
                                        "critic_warmup_updates": 1}, "eval_episodes": 4})
    policy, hist = train_token_bc_stage(cache, index, TASKS, cfg, seed=0, device="cpu")
    assert isinstance(policy, TokenPolicy) and policy.config.num_tokens == 4 and len(hist)
    wmrl, ppo_hist, calib = train_wmrl_stage(wm, policy, cache, index, TASKS, cfg, seed=0, device="cpu")
    assert isinstance(wmrl, TokenPolicy) and len(ppo_hist) == 2
    assert calib.iloc[0]["success_threshold"] > 0 and calib.iloc[0]["threshold_source"].startswith("calibrated")
    assert not torch.equal(wmrl.log_std, policy.log_std) or not all(
        torch.equal(a, b) for a, b in zip(wmrl.parameters(), policy.parameters()))  # PPO changed a copy
    assert np.isfinite(calib.iloc[0]["after_mean_return"])


def test_eval_seeds_are_a_separate_range():
    seeds = eval_seeds(EvaluationConfig(n_episodes=3), seed=0)
    assert seeds == [10_000, 10_001, 10_002]
