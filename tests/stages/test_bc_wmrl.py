"""The policy stages (``stages.bc``, ``stages.wmrl``, ``stages.evaluation``) end to end on small real episodes (synthetic pushing videos, real DINO cache with random
weights, untrained tiny RLA and world model): BC, BC+RLA, token BC, WMRL and the tables run and fit together."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rla_pipeline.models.policy import BCResNetPolicy, TokenPolicy
from rla_pipeline.stages.bc import ActionlessBCConfig, train_bc_policy
from rla_pipeline.stages.evaluation import EvaluationConfig, eval_seeds
from rla_pipeline.stages.wmrl import WMRLConfig, start_policy, train_token_bc, train_wmrl

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


@pytest.fixture(scope="module")
def decoder(data):
    """A real pixel decoder, trained briefly on the fixture's tokens and frames at 8 px: its decodes of the 32 px
    frames are blurry, as the 64 px decodes of 128 px frames are at the small default (the stand-in for
    ``pixel_decoder_model_all_tasks``)."""
    from rla_pipeline.models.pixel_decoder import PixelDecoder, PixelDecoderConfig, frames_to_images

    store, index, cache, _, _ = data
    m = cache.manifest().iloc[0]
    eids = list(index["episode_id"])
    tokens = torch.cat([torch.from_numpy(np.array(cache.tokens(e), dtype=np.float32)) for e in eids])
    images = torch.cat([frames_to_images(store.read_frames(e), 8) for e in eids])
    torch.manual_seed(0)
    dec = PixelDecoder(PixelDecoderConfig(num_tokens=int(m["tokens"]), token_dim=int(m["dims"]), image_size=8,
                                          channels=[8], groups=4))
    flat = tokens.flatten(0, 1)
    dec.set_stats(flat.mean(0), flat.std(0) + 1e-6, images.mean(0))
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    for _ in range(100):
        i = torch.randint(0, len(tokens), (32,))
        loss = (dec(tokens[i]) - images[i]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dec.eval()


def test_bc_and_bc_rla_stages(data, decoder):
    store, index, cache, rla, _ = data
    cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
                                        "trainer": TRAINER})
    assert cfg.decoded_copies  # the default: labelled episodes also as decoded frames
    bc, hist = train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc", cache=cache,
                               pixel_decoder=decoder)
    bc_rla, hist_rla = train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc_rla",
                                      cache=cache, rla=rla, pixel_decoder=decoder)
    assert isinstance(bc, BCResNetPolicy) and bc.latent_head is None and bc.config.task_names == TASKS
    assert bc_rla.latent_head is not None and bc_rla.config.latent_tokens == 2
    assert "latent_l1" in hist_rla.columns and "latent_l1" not in hist.columns
    assert "val" in set(hist["split"])  # the held-out demos are the validation set
    assert bc.act(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), task=torch.tensor([1])).shape == (1, 4, 4)


RL = {"episodes": EPISODES, "token_policy": {"hidden": 16, "token_proj": 4, "chunk": 4}, "bc_trainer": TRAINER,
      "env": {"num_envs": 4, "max_chunks": 2},
      "ppo": {"total_env_steps": 16, "num_steps": 2, "num_minibatches": 2, "critic_warmup_updates": 1}}


def test_token_bc_then_wmrl(data):
    _, index, cache, _, wm = data
    cfg = WMRLConfig.from_dict({**RL, "policy": "token"})
    policy, hist = start_policy(cache, index, None, cfg, TASKS, seed=0, device="cpu")
    assert isinstance(policy, TokenPolicy) and policy.config.num_tokens == 4 and len(hist)
    wmrl, ppo_hist, calib = train_wmrl(wm, policy, cache, index, cfg, TASKS, seed=0, device="cpu")
    assert isinstance(wmrl, TokenPolicy) and len(ppo_hist) == 2
    assert calib.iloc[0]["success_threshold"] > 0 and calib.iloc[0]["threshold_source"].startswith("calibrated")
    assert not torch.equal(wmrl.log_std, policy.log_std) or not all(
        torch.equal(a, b) for a, b in zip(wmrl.parameters(), policy.parameters()))  # PPO changed a copy
    assert np.isfinite(calib.iloc[0]["after_mean_return"])
    # one imagined episode per start state (= labelled demo), not the first n finished episodes
    assert calib.iloc[0]["after_episodes"] == 2 * EPISODES["n_labelled_per_task"]
    assert calib.iloc[0]["executed_per_chunk"] == 4
    assert calib.iloc[0]["policy"] == "token" and calib.iloc[0]["imagined_env_chunks_per_s"] > 0


def _tiny_decoder(cache):
    from rla_pipeline.models.pixel_decoder import PixelDecoder, PixelDecoderConfig

    m = cache.manifest().iloc[0]
    torch.manual_seed(0)
    return PixelDecoder(PixelDecoderConfig(num_tokens=int(m["tokens"]), token_dim=int(m["dims"]), image_size=16,
                                           channels=[8, 8], groups=4)).eval()


def test_bc_resnet_wmrl_acts_on_decoded_rgb_and_stays_a_bc_resnet(data, decoder):
    """rl.policy bc_resnet: WMRL starts from Table 2's BC-ResNet itself, acts on decoded frames at the camera size,
    and returns a BC-ResNet for the simulator; the calibration row reports the decoding gap and the speed."""
    store, index, cache, _, wm = data
    bc_cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16,
                                                                            "chunk": 4}, "trainer": TRAINER})
    bc, _ = train_bc_policy(store, index, TASKS, bc_cfg, seed=0, device="cpu", run_name="bc", cache=cache,
                            pixel_decoder=decoder)
    cfg = WMRLConfig.from_dict(RL)  # the default policy mode
    assert cfg.policy == "bc_resnet" and cfg.bc_resnet.trainable == "head"
    start, hist = start_policy(cache, index, bc, cfg, TASKS, seed=0, device="cpu")
    assert isinstance(start, BCResNetPolicy) and start is not bc and "bc_training_history" in hist.iloc[0]["note"]
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), bc.state_dict().values()))
    with pytest.raises(ValueError, match="pixel decoder"):
        train_wmrl(wm, start, cache, index, cfg, TASKS, seed=0, device="cpu")
    with pytest.raises(TypeError, match="TokenPolicy"):
        train_wmrl(wm, start, cache, index, WMRLConfig.from_dict({**RL, "policy": "token"}), TASKS, seed=0,
                   device="cpu")
    wmrl, ppo_hist, calib = train_wmrl(wm, start, cache, index, cfg, TASKS, seed=0, device="cpu",
                                       pixel_decoder=_tiny_decoder(cache), episodes=store,
                                       evaluation_params={"sim": {"image_size": None}})
    row = calib.iloc[0]
    assert isinstance(wmrl, BCResNetPolicy) and wmrl.config == start.config and len(ppo_hist) == 2
    assert row["policy"] == "bc_resnet" and row["image_size"] == int(index["height"].iloc[0])  # null: the episodes' size
    assert row["gap_frames"] == 2 * EPISODES["n_labelled_per_task"] and np.isfinite(row["gap_decoded_psnr"])
    assert row["gap_action_l1"] >= 0 and row["imagined_env_chunks_per_s"] > 0 and row["ppo_seconds"] > 0
    assert row["after_episodes"] == 2 * EPISODES["n_labelled_per_task"]
    changed = [k for k, v in wmrl.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert changed and all(k.startswith(("trunk.", "action_head.")) for k in changed)  # head mode: backbone kept
    assert wmrl.act(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), task=torch.tensor([0])).shape == (1, 4, 4)


def test_table3_compares_bc_resnet_with_wmrl_on_paired_seeds():
    import pandas as pd

    from rla_pipeline.stages.evaluation import wmrl_baseline_name, wmrl_success_table
    from rla_pipeline.models.policy import BCResNetConfig, TokenPolicyConfig

    rows = [{"policy": p, "task": "PokeCube-v1", "seed": s, "success": ok, "steps": 5, "seconds": 0.1}
            for s in range(6) for p, ok in (("bc", s < 2), ("wmrl", s < 5))]
    table, md = wmrl_success_table(pd.DataFrame(rows))
    assert {"bc_sr", "wmrl_sr"} <= set(table.columns) and "BC-ResNet vs WMRL" in md
    assert float(table.loc[table["task"] == "PokeCube-v1", "wmrl_sr"].iloc[0]) == pytest.approx(500 / 6)
    assert wmrl_baseline_name(BCResNetPolicy(BCResNetConfig(image_size=32, hidden=8))) == "bc"
    assert wmrl_baseline_name(TokenPolicy(TokenPolicyConfig(hidden=8))) == "token_bc"


def test_simulator_and_imagination_execute_the_same_actions_per_chunk():
    from rla_pipeline.stages.evaluation import check_same_execution

    assert check_same_execution({}, {}, chunk=8) == 8  # defaults: the whole chunk in both
    assert check_same_execution({"sim": {"execute_steps": 4}}, {"env": {"execute_steps": 4}}, chunk=8) == 4
    with pytest.raises(ValueError, match="execute_steps"):
        check_same_execution({"sim": {"execute_steps": 4}}, {}, chunk=8)


def test_eval_seeds_are_a_separate_range():
    seeds = eval_seeds(EvaluationConfig(n_episodes=3), seed=0)
    assert seeds == [10_000, 10_001, 10_002]


def test_bc_checkpoints_go_under_the_one_root(data, tmp_path):
    store, index, _, _, _ = data
    cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
                                        "trainer": {**TRAINER, "checkpoint_every": 3}, "decoded_copies": False})
    train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc", checkpoint_root=str(tmp_path))
    assert list((tmp_path / "actionless_bc" / "bc").iterdir())  # <root>/<stage>/<run>


def test_sim_config_takes_the_training_episodes_size_and_control_mode(data):
    from rla_pipeline.stages.evaluation import sim_config

    _, index, _, _, _ = data
    index = index.assign(control_mode="pd_joint_delta_pos")
    scfg = sim_config(EvaluationConfig.from_dict({"sim": {"image_size": None, "control_mode": None}}), index, TASKS)
    assert scfg.image_size == int(index["height"].iloc[0]) and scfg.control_mode == "pd_joint_delta_pos"
    fixed = sim_config(EvaluationConfig.from_dict({"sim": {"image_size": 64, "control_mode": "pd_ee_delta_pos"}}),
                       index, TASKS)
    assert (fixed.image_size, fixed.control_mode) == (64, "pd_ee_delta_pos")


def test_bc_and_bc_rla_see_the_same_labelled_batches_with_actionless_added(data, decoder):
    """Same seed and labelled sampler: BC+RLA's labelled frames are BC's, in BC's order; actionless come on top.
    With decoded copies on, both labelled sets are the same rendered episodes + the same decoded copies."""
    from rla_pipeline.rl.bc import latent_targets, select_episodes
    from rla_pipeline.stages.bc import bc_datasets, decoded_frames_fn
    from rla_pipeline.training.trainer import epoch_order
    from rla_pipeline.models.policy import BCResNetConfig

    store, index, cache, rla, _ = data
    cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
                                        "trainer": TRAINER, "actionless_per_labelled": 2})
    e = cfg.episodes
    sel = select_episodes(index, TASKS, e.n_labelled_per_task, e.n_val_per_task, e.max_actionless_per_task,
                          e.extra_demos_as_actionless)
    pconf = BCResNetConfig(image_size=32, chunk=4, latent_tokens=2, latent_dim=4)
    z_of = lambda eid: latent_targets(rla, cache.tokens(eid), h=4)  # noqa: E731
    decoded_of = decoded_frames_fn(cache, decoder, 32)
    bc, _ = bc_datasets(store, index, TASKS, cfg, sel, pconf, 4, seed=0, decoded_of=decoded_of)
    bc_rla, _ = bc_datasets(store, index, TASKS, cfg, sel, pconf, 4, seed=0, z_of=z_of, decoded_of=decoded_of)
    assert len(bc) == len(bc_rla)  # the trainer's sampler depends only on (seed, len): the same order
    # the same labelled episodes (rendered, then their decoded copies): frames, action chunks, tasks, items
    assert len(bc.labelled.episodes) == len(bc_rla.labelled.episodes) == 2 * len(sel.labelled)
    assert bc.labelled.items == bc_rla.labelled.items
    for a, b in zip(bc.labelled.episodes, bc_rla.labelled.episodes):
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["chunks"], b["chunks"])
        assert a["task"] == b["task"]
    order = epoch_order(0, 0, len(bc))[:16].tolist()
    for epoch in (0, 1):
        bc.set_epoch(epoch), bc_rla.set_epoch(epoch)
        for i in order:
            a, b = bc[i], bc_rla[i]
            assert a["image"].shape[0] == 1 and b["image"].shape[0] == 3  # 1 labelled + 2 actionless on top
            assert torch.equal(a["image"][0], b["image"][0]) and torch.equal(a["actions"][0], b["actions"][0])
            assert bool(b["action_mask"][0].any()) and not bool(b["action_mask"][1:].any())
            assert bool(b["has_z"].all())


def test_bc_rla_with_latent_weight_zero_trains_exactly_as_bc(data, decoder):
    """The control that separates implementation from method: with the latent loss off, BC+RLA's extra frames must
    change nothing (no BatchNorm statistics from actionless frames, no shared random-shift stream), so every
    weight but the unused latent head equals BC's after training on the same seed. Decoded copies on (the default):
    both get the same copies."""
    store, index, cache, rla, _ = data
    d = {"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
         "trainer": {**TRAINER, "max_steps": 4}, "actionless_per_labelled": 2,
         "loss": {"latent_l1_weight": 0.0, "latent_mse_weight": 0.0, "random_shift": 2}}
    cfg = ActionlessBCConfig.from_dict(d)
    assert cfg.decoded_copies
    bc, _ = train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc", cache=cache,
                            pixel_decoder=decoder)
    bc_rla, _ = train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc_rla", cache=cache,
                                rla=rla, pixel_decoder=decoder)
    sd_rla = bc_rla.state_dict()
    for k, v in bc.state_dict().items():
        assert torch.equal(v, sd_rla[k]), k  # incl. BatchNorm running statistics
    # with the latent loss on, the actionless frames train the shared weights but leave BC's BatchNorm statistics
    cfg_on = ActionlessBCConfig.from_dict({**d, "loss": {"random_shift": 2}})
    on, _ = train_bc_policy(store, index, TASKS, cfg_on, seed=0, device="cpu", run_name="bc_rla_on", cache=cache,
                            rla=rla, pixel_decoder=decoder)
    assert not torch.equal(on.state_dict()["trunk.0.weight"], bc.state_dict()["trunk.0.weight"])


def test_actionless_frames_do_not_move_batchnorm_running_statistics():
    from rla_pipeline.models.policy import BCResNetConfig
    from rla_pipeline.stages.bc import batchnorm_stats_frozen

    torch.manual_seed(0)
    policy = BCResNetPolicy(BCResNetConfig(image_size=32, hidden=8)).train()
    before = {k: v.clone() for k, v in policy.state_dict().items() if "running_" in k}
    with batchnorm_stats_frozen(policy):
        policy.features(torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8))
    assert all(torch.equal(before[k], policy.state_dict()[k]) for k in before)
    policy.features(torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8))  # outside: they move as usual
    assert not all(torch.equal(before[k], policy.state_dict()[k]) for k in before)


def test_balanced_tasks_draw_each_task_about_equally():
    """A long task (PushT's demos are ~5x PullCube's) no longer crowds out a short one: with balancing each task's
    share of the samples is within one repetition's rounding of 1 / tasks; without, it is its share of frames."""
    from rla_pipeline.rl.bc import ImageChunkDataset

    def ep(T, task):
        return {"frames": torch.zeros(T, 8, 8, 3, dtype=torch.uint8), "actions": np.zeros((T, 2), np.float32),
                "task": task}

    eps = [ep(100, 0), ep(90, 0), ep(20, 1), ep(18, 1), ep(41, 2)]
    plain = ImageChunkDataset(eps, chunk=2, action_dim=2)
    balanced = ImageChunkDataset(eps, chunk=2, action_dim=2, balance_tasks=True)
    share = lambda ds: np.bincount([ds.episodes[i]["task"] for i, _ in ds.items]) / len(ds)  # noqa: E731
    assert share(plain)[0] > 0.6
    assert np.all(np.abs(share(balanced) - 1 / 3) < 0.05), share(balanced)
    assert plain.fingerprint != balanced.fingerprint


def test_bc_history_reports_the_mean_chunk_check(data):
    """Each BC run logs its validation action error beside a per-task mean-chunk predictor's."""
    store, index, _, _, _ = data
    cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
                                        "trainer": TRAINER, "decoded_copies": False})
    _, hist = train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc")
    row = hist[hist["split"] == "mean_chunk_check"].iloc[0]
    assert row["val_action_mse_mean_chunk"] > 0 and np.isfinite(row["val_action_mse_policy"])
    assert row["val_action_mse_ratio"] == pytest.approx(row["val_action_mse_policy"] / row["val_action_mse_mean_chunk"])


def test_decoded_copies_are_the_frames_wmrl_decodes(data, decoder):
    """Each labelled episode comes twice: rendered, then as DecodedImageEnv.decode's frames of its cached tokens at
    the camera size, resized to the policy's size as any frame; same action chunks and task. Validation: rendered."""
    import copy
    from types import SimpleNamespace

    from rla_pipeline.models.policy import BCResNetConfig
    from rla_pipeline.rl.bc import resize_frames, select_episodes
    from rla_pipeline.rl.decoded_env import DecodedImageEnv
    from rla_pipeline.stages.bc import bc_datasets, decoded_frames_fn

    store, index, cache, _, _ = data
    cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 16, "hidden": 16, "chunk": 4},
                                        "trainer": TRAINER})
    e = cfg.episodes
    sel = select_episodes(index, TASKS, e.n_labelled_per_task, e.n_val_per_task, e.max_actionless_per_task)
    camera = 24  # decoder 8 px -> camera 24 px -> policy 16 px: both resizes happen
    train, val = bc_datasets(store, index, TASKS, cfg, sel, BCResNetConfig(image_size=16, chunk=4), 4, seed=0,
                             decoded_of=decoded_frames_fn(cache, decoder, camera))
    m = cache.manifest().iloc[0]
    token_env = SimpleNamespace(num_tokens=int(m["tokens"]), token_dim=int(m["dims"]), device=torch.device("cpu"))
    env = DecodedImageEnv(token_env, copy.deepcopy(decoder), camera)
    eps, L = train.labelled.episodes, len(sel.labelled)
    assert len(eps) == 2 * L
    for i, eid in enumerate(sel.labelled):
        real, dec = eps[i], eps[L + i]
        tokens = torch.from_numpy(np.array(cache.tokens(eid), dtype=np.float32))
        assert torch.equal(real["frames"], resize_frames(store.read_frames(eid), 16))
        assert torch.equal(dec["frames"], resize_frames(env.decode(tokens).numpy(), 16))
        assert not torch.equal(dec["frames"], real["frames"])
        assert torch.equal(dec["chunks"], real["chunks"]) and torch.equal(dec["mask"], real["mask"])
        assert dec["task"] == real["task"]
    assert len(val.labelled.episodes) == len(sel.val)  # no copies among the validation episodes
    for ep, eid in zip(val.labelled.episodes, sel.val):
        assert torch.equal(ep["frames"], resize_frames(store.read_frames(eid), 16))


def test_decoded_copies_need_the_decoder_and_the_cache(data):
    store, index, cache, _, _ = data
    cfg = ActionlessBCConfig.from_dict({"episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
                                        "trainer": TRAINER})
    for kwargs in ({}, {"cache": cache}):
        with pytest.raises(ValueError, match="actionless_bc.decoded_copies"):
            train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name="bc", **kwargs)


def test_decoded_copies_close_the_decoding_gap(data, decoder):
    """The BC-ResNet acts on a decoded frame as on the rendered frame it stands for only when trained on decoded
    copies: without them its decoding gap (stages.wmrl.decoding_gap on the imagined env's start frames, as in
    imagined_env_calibration) is above a third of the action scale (Table 3's flag), with them below it; over
    every labelled frame the gap at least halves."""
    import copy

    from rla_pipeline.rl.bc import resize_frames
    from rla_pipeline.rl.decoded_env import DecodedImageEnv
    from rla_pipeline.stages.wmrl import camera_size, decoding_gap, demo_tokens, make_imagined_env

    store, index, cache, _, wm = data
    evaluation = {"sim": {"image_size": None}}  # the camera: the episodes' 32 px
    camera = camera_size(index, TASKS, evaluation)
    rl = WMRLConfig.from_dict(RL)
    env, _ = make_imagined_env(wm, cache, index, TASKS, rl, chunk=4)
    env = DecodedImageEnv(env, copy.deepcopy(decoder), camera)
    sel, tokens, task_idx = demo_tokens(cache, index, TASKS, rl)
    real = torch.cat([resize_frames(store.read_frames(eid), camera) for eid in sel.labelled])
    decoded = torch.cat([env.decode(torch.from_numpy(np.array(t, dtype=np.float32))) for t in tokens])
    task = torch.cat([torch.full((len(t),), k) for t, k in zip(tokens, task_idx)])

    def gaps(copies: bool):
        cfg = ActionlessBCConfig.from_dict({
            "episodes": EPISODES, "policy": {"image_size": 32, "hidden": 16, "chunk": 4},
            "loss": {"random_shift": 0}, "decoded_copies": copies,
            "trainer": {"max_steps": 60, "batch_size": 16, "lr": 3e-3, "warmup_steps": 0, "log_every": 20,
                        "val_every": 1000, "checkpoint_every": 1000}})
        policy, _ = train_bc_policy(store, index, TASKS, cfg, seed=0, device="cpu", run_name=f"bc_copies_{copies}",
                                    cache=cache, pixel_decoder=decoder, evaluation_params=evaluation)
        starts = decoding_gap(policy, env, store, sel.labelled, task_idx)
        with torch.no_grad():
            a_real, a_dec = policy.eval()(real, task=task), policy(decoded, task=task)
        every = float((a_real - a_dec).abs().mean() / a_real.abs().mean())
        return starts["gap_action_l1"] / starts["gap_action_scale"], every

    without, every_without = gaps(False)
    with_copies, every_with = gaps(True)
    assert without > 1 / 3 > with_copies, (without, with_copies)
    assert every_with < 0.5 * every_without, (every_without, every_with)
