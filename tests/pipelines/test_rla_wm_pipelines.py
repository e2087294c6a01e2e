"""The ``rla`` and ``world_model`` stages as their pipelines wire them, on tiny synthetic data (real cache, real
trainer), and the typed configs they build from the test parameters."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """Synthetic episodes of two seen tasks + the held-out task, encoded by a random-init DINO at 56 px."""
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.synthetic import write_synthetic_store
    from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    root = tmp_path_factory.mktemp("rlawm")
    store = EpisodeStore(root / "episodes")
    write_synthetic_store(store, n_per_kind=2, tasks=("PushCube-v1", "PokeCube-v1"), num_frames=24, size=56,
                          kinds=("demo", "play", "actionless"))
    cache = FeatureCache(root / "cache")
    enc = DinoEncoder(EncoderConfig(weights="random", image_size=56, device="cpu", batch_size=32))
    manifest = cache.update(store, enc, cfg=FeatureCacheConfig(progress=False))
    return cache, store.index(), manifest


def _params(project_root, name):
    """conf/base merged with conf/test, key by key (what `kedro run --env=test` gives the node)."""
    from omegaconf import OmegaConf

    base = yaml.safe_load((project_root / "conf" / "base" / f"parameters_{name}.yml").read_text())[name]
    test = yaml.safe_load((project_root / "conf" / "test" / f"parameters_{name}.yml").read_text())[name]
    return OmegaConf.to_container(OmegaConf.merge(base, test))


def test_splits_are_deterministic_and_hold_out_the_task(tiny_cache, project_root):
    from rla_pipeline.stages.rla import split_episodes

    _, index, manifest = tiny_cache
    params = _params(project_root, "rla")
    a = split_episodes(index, manifest, params, seed=0)
    b = split_episodes(index, manifest, params, seed=0)
    pd.testing.assert_frame_equal(a, b)
    assert set(a.loc[a.task == "PokeCube-v1", "split"]) == {"heldout_task"}
    seen = a[a.task != "PokeCube-v1"]
    assert set(seen.split) == {"train", "val"}


def test_rla_and_world_model_pipelines_run(tiny_cache, project_root, tmp_path):
    import torch

    from rla_pipeline.datasets.torch_model import TorchModelDataset
    from rla_pipeline.stages import rla as rla_nodes
    from rla_pipeline.stages import world_model as wm_nodes

    cache, index, manifest = tiny_cache
    rp, wp = _params(project_root, "rla"), _params(project_root, "world_model")
    splits = rla_nodes.split_episodes(index, manifest, rp, seed=0)
    rla = rla_nodes.train_rla(cache, splits, index, rp, "cpu")
    assert rla.token_std.min() > 0 and not torch.allclose(rla.token_std, torch.ones_like(rla.token_std))
    seen, unseen, prog = rla_nodes.evaluate_rla(rla, cache, splits, rp)
    for table in (seen, unseen):
        assert list(table.h) == ["2", "5", "all"]
        assert (table.copy_l1 > 0).all() and np.isfinite(table.rla_l1).all()
    assert len(prog) > 0 and prog.spearman.between(-1, 1).all()

    ds = TorchModelDataset(str(tmp_path / "rla.safetensors"))
    ds.save(rla)
    rla = ds.load()
    wm = wm_nodes.train_rla_world_model(rla, cache, splits, index, wp, "cpu")
    det = wm_nodes.train_deterministic_baseline(cache, splits, index, wp, "cpu", None, 0, rp)
    res = wm_nodes.train_deterministic_residual_baseline(cache, splits, index, wp, "cpu", None, 0, rp)
    absf = wm_nodes.train_absolute_flow_baseline(cache, splits, index, wp, "cpu", None, 0, rp)
    assert not det.config.predict_residual and res.config.predict_residual  # the two deterministic rows
    assert all(torch.equal(wm.rla.state_dict()[k], v) for k, v in rla.state_dict().items())  # frozen
    table, plot, pictures = wm_nodes.evaluate_world_models(wm, det, absf, cache, splits, index, wp, seed=0,
                                                           wm_baseline_deterministic_residual=res)
    assert set(table.model) == {"copy", "rla_wm", "deterministic", "deterministic_residual", "absolute_flow"}
    base = table[table.model.isin(["deterministic", "deterministic_residual", "absolute_flow"])]
    assert base.ref_minus_ci_low.le(base.ref_minus_ci_high).all() and base.ref_minus_vs_copy.notna().all()
    assert (table[table.model != "copy"].vs_copy_ci_low <= table[table.model != "copy"].vs_copy_ci_high).all()
    assert set(table.horizon) == {2, 5, 10}
    assert (table.loc[table.horizon == 10, "chunks"] == 2).all()  # 10 frames = 2 autoregressive chunks of 5
    learned = table[table.model != "copy"]
    assert (learned.gflops_per_step > 0).all() and (learned.seconds_per_step > 0).all()
    assert np.isfinite(table.token_l1).all()
    # parameters per model (RLA-WM with its autoencoder) and the data each trained on: only RLA-WM's autoencoder
    # saw the episodes without actions
    n = table.groupby("model")["params"].first()
    assert n["copy"] == 0 and n["deterministic"] == sum(p.numel() for p in det.parameters())
    assert n["rla_wm"] == sum(p.numel() for p in wm.parameters()) > sum(p.numel() for p in rla.parameters())
    on = table.groupby("model")["trained_on"].first()
    n_actionless = int((splits.kind == "actionless").sum())
    assert n_actionless > 0 and "actionless" in on["rla_wm"] and "actionless" not in on["deterministic"]
    assert on["deterministic"] == on["absolute_flow"] and on["rla_wm"].startswith(on["deterministic"])
    from matplotlib.figure import Figure

    assert isinstance(plot, Figure) and isinstance(pictures, Figure)
    plot.savefig(tmp_path / "p.png")
    pictures.savefig(tmp_path / "q.png")


def test_global_seed_reaches_the_rla_and_world_model_trainers(tiny_cache, project_root):
    """Changing `seed` changes the RLA's and the world models' training (it stayed 0 whatever `seed` said)."""
    import torch

    from rla_pipeline.stages import rla as rla_nodes
    from rla_pipeline.stages import world_model as wm_nodes

    cache, index, manifest = tiny_cache
    rp = _params(project_root, "rla")
    rp["trainer"] = {**rp["trainer"], "max_steps": 3, "val_every": 3, "warmup_steps": 0}
    wp = _params(project_root, "world_model")
    wp["trainer"] = {**wp["trainer"], "max_steps": 3, "val_every": 3, "warmup_steps": 0}
    wp["budget"] = "same_steps"
    splits = rla_nodes.split_episodes(index, manifest, rp, seed=0)

    def weights(m):
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    r0, r0b, r1 = (rla_nodes.train_rla(cache, splits, index, rp, "cpu", seed=s) for s in (0, 0, 1))
    assert torch.equal(weights(r0), weights(r0b)) and not torch.equal(weights(r0), weights(r1))
    d0, d0b, d1 = (wm_nodes.train_deterministic_baseline(cache, splits, index, wp, "cpu", None, s, rp)
                   for s in (0, 0, 1))
    assert torch.equal(weights(d0), weights(d0b)) and not torch.equal(weights(d0), weights(d1))


def test_table_models_see_every_task_and_claim_1_2_keeps_its_own_heldout_run(tiny_cache, project_root):
    """rla_model (used by BC+RLA / WMRL / the world model) trains on the held-out task too; rla_heldout_model not."""
    from rla_pipeline.stages import rla as rla_nodes

    cache, index, manifest = tiny_cache
    rp = _params(project_root, "rla")
    cfg = rla_nodes.RLAStageConfig.from_dict(rp)
    splits = rla_nodes.split_episodes(index, manifest, rp, seed=0)
    held = set(splits.loc[splits.split == "heldout_task", "episode_id"])
    assert held  # PokeCube-v1 is the held-out task of the test data
    main = rla_nodes.build_rla_data(cache, splits, index, cfg, include_heldout_task=True)
    claim = rla_nodes.build_rla_data(cache, splits, index, cfg, include_heldout_task=False)
    assert held <= set(main.train.episode_ids) and not held & set(claim.train.episode_ids)
    assert set(rla_nodes.training_episode_ids(splits, True)) == set(splits.loc[splits.split != "val", "episode_id"])


def test_baselines_get_the_total_budget_of_rla_wm():
    from rla_pipeline.stages.world_model import baseline_steps

    wp = {"trainer": {"max_steps": 1200, "batch_size": 32}}
    rp = {"trainer": {"max_steps": 1500, "batch_size": 64}}
    assert baseline_steps(wp, rp) == 1200 + 3000  # the RLA's 1500 x 64 samples at batch 32
    assert baseline_steps({**wp, "budget": "same_steps"}, rp) == 1200


def test_pipelines_are_registered_with_catalog_entries(project_root):
    from rla_pipeline.pipelines.rla.pipeline import create_pipeline as rla_pipe
    from rla_pipeline.pipelines.world_model.pipeline import create_pipeline as wm_pipe

    catalog = {}
    for name in ("rla", "world_model"):
        catalog.update(yaml.safe_load((project_root / "conf/base" / f"catalog_{name}.yml").read_text()))
    outputs = rla_pipe().all_outputs() | wm_pipe().all_outputs()
    assert outputs == set(catalog)
    for name in ("rla", "world_model"):
        base = yaml.safe_load((project_root / "conf/base" / f"parameters_{name}.yml").read_text())
        assert set(base) == {name}


def test_rla_node_trains_the_tuned_shape_only_when_asked(tiny_cache, project_root):
    """The tune pipeline's best shape reaches `rla` without hand copying (rla.use_tuned_shape)."""
    from rla_pipeline.stages import rla as rla_nodes

    cache, index, manifest = tiny_cache
    rp = {**_params(project_root, "rla")}
    rp["trainer"] = {**rp["trainer"], "max_steps": 2, "val_every": 2, "warmup_steps": 0}
    splits = rla_nodes.split_episodes(index, manifest, rp, seed=0)
    tuned = {"latent_tokens": 3, "latent_dim": 5, "lr": 1e-3}
    configured = rla_nodes.train_rla(cache, splits, index, rp, "cpu", tuned)
    assert (configured.config.latent_tokens, configured.config.latent_dim) == (
        rp["model"]["latent_tokens"], rp["model"]["latent_dim"])
    tuned_model = rla_nodes.train_rla(cache, splits, index, {**rp, "use_tuned_shape": True}, "cpu", tuned)
    assert (tuned_model.config.latent_tokens, tuned_model.config.latent_dim) == (3, 5)
    with pytest.raises(ValueError, match="run `kedro run --pipelines=tune`"):
        rla_nodes.train_rla(cache, splits, index, {**rp, "use_tuned_shape": True}, "cpu", None)


def test_rla_and_world_model_builds_share_one_builder(tiny_cache, project_root):
    """tune trains through the rla stage's builders: same data, same token stats, same model for the same shape."""
    from rla_pipeline.stages import rla as stage
    from rla_pipeline.stages.tune import build_trial_data

    cache, index, manifest = tiny_cache
    rp = _params(project_root, "rla")
    cfg = stage.RLAStageConfig.from_dict(rp)
    splits = stage.split_episodes(index, manifest, rp, seed=0)
    data = stage.build_rla_data(cache, splits, index, cfg)
    model = stage.build_rla_model(data, cfg.model, (3, 5))
    assert (model.config.num_tokens, model.config.token_dim) == (data.train.num_tokens, data.train.token_dim)
    assert (model.config.latent_tokens, model.config.latent_dim, model.config.width) == (3, 5, cfg.model.width)
    assert torch_equal(model.token_mean, data.token_stats[0]) and torch_equal(model.token_std, data.token_stats[1])
    trial = build_trial_data(cache, index, splits, rp, "cpu")
    assert trial.describe == {"train_pairs": len(data.train), "val_pairs": len(data.val)}


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_joint_position_conditioning_trains_evaluates_and_keeps_wmrl_on_actions(tiny_cache, project_root, tmp_path):
    """world_model.conditioning: joint_positions conditions every model on the proprio chunks (recorded in the
    saved config), the table feeds them joint positions, and WMRL gets an RLA-WM conditioned on actions."""
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig
    from rla_pipeline.stages import rla as rla_nodes
    from rla_pipeline.stages import world_model as wm_nodes
    from rla_pipeline.stages.checks import DataCheckError

    cache, index, manifest = tiny_cache
    rp = _params(project_root, "rla")
    rp["trainer"] = {**rp["trainer"], "max_steps": 3, "val_every": 3, "warmup_steps": 0}
    wp = _params(project_root, "world_model")
    wp["trainer"] = {**wp["trainer"], "max_steps": 3, "val_every": 3, "warmup_steps": 0}
    wp = {**wp, "budget": "same_steps", "conditioning": "joint_positions"}
    splits = rla_nodes.split_episodes(index, manifest, rp, seed=0)
    rla = rla_nodes.train_rla(cache, splits, index, rp, "cpu")
    wm = wm_nodes.train_rla_world_model(rla, cache, splits, index, wp, "cpu")
    det = wm_nodes.train_deterministic_baseline(cache, splits, index, wp, "cpu", None, 0, rp)
    absf = wm_nodes.train_absolute_flow_baseline(cache, splits, index, wp, "cpu", None, 0, rp)
    for m in (wm, det, absf):  # the synthetic proprio is 2-d (actions are 4-d): the models read the proprio
        assert m.config.conditioning == "joint_positions" and m.config.action_dim == 2
    table, _, _ = wm_nodes.evaluate_world_models(wm, det, absf, cache, splits, index, wp, seed=0)
    assert np.isfinite(table.token_l1).all() and set(table.horizon) == {2, 5, 10}
    rl_wm = wm_nodes.world_model_for_rl(wm, rla, cache, splits, index, wp, "cpu")
    assert rl_wm is not wm and rl_wm.config.conditioning == "actions" and rl_wm.config.action_dim == 4
    assert wm_nodes.world_model_for_rl(rl_wm, rla, cache, splits, index, wp, "cpu") is rl_wm  # actions: as is
    with pytest.raises(ValueError, match="conditioned differently"):
        wm_nodes.evaluate_world_models(rl_wm, det, absf, cache, splits, index, wp, seed=0)
    with pytest.raises(ValueError, match="disagrees with world_model.conditioning"):
        wm_nodes.WorldModelStageConfig.from_dict({**wp, "samples": {"action_source": "proprio"}})

    # labelled episodes without proprio (a LeRobot dataset imported without its state): stop up front, clearly
    store = EpisodeStore(tmp_path / "episodes")
    for eid in index.episode_id:
        ep = EpisodeStore(cache.root.parent / "episodes").read(eid)
        ep.steps["proprio"] = None
        ep.meta.proprio_dim = None
        store.write(ep)
    bare = FeatureCache(tmp_path / "cache")
    enc = DinoEncoder(EncoderConfig(weights="random", image_size=56, device="cpu", batch_size=32))
    bare.update(store, enc, cfg=FeatureCacheConfig(progress=False))
    with pytest.raises(DataCheckError, match=r"conditioning is joint_positions.*have none.*conditioning: actions"):
        wm_nodes.train_rla_world_model(rla, bare, splits, store.index(), wp, "cpu")
