"""The ``pixel_decoder`` stage and pipeline on small real episodes (synthetic renderer -> mp4, random-init DINO cache):
the decoder, and the world models' rollouts decoded by it (``stages.world_model_images``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

TASKS = ("PushCube-v1", "PullCube-v1", "PokeCube-v1")  # PokeCube-v1 is the held-out task of conf/test


def _fill(root):
    """Episodes, their index, a DINO cache (random init, 56 px: 4 x 4 tokens) and its manifest under ``root``,
    at the paths of the project's catalog (``RLA_DATA_ROOT=root``)."""
    from rla_pipeline.episodes.format import EpisodeStore
    from rla_pipeline.episodes.synthetic import write_synthetic_store
    from rla_pipeline.features.cache import FeatureCache, FeatureCacheConfig
    from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

    store = EpisodeStore(root / "01_raw" / "episodes")
    write_synthetic_store(store, n_per_kind=2, tasks=TASKS, num_frames=24, size=56, kinds=("demo", "play"))
    cache = FeatureCache(root / "04_feature" / "dino_cache")
    enc = DinoEncoder(EncoderConfig(weights="random", image_size=56, device="cpu", batch_size=32))
    manifest = cache.update(store, enc, cfg=FeatureCacheConfig(progress=False))
    index = store.index()
    (root / "02_intermediate").mkdir(parents=True, exist_ok=True)
    index.to_parquet(root / "02_intermediate" / "episode_index.parquet", index=False)
    manifest.to_parquet(root / "04_feature" / "feature_manifest.parquet", index=False)
    return store, cache, index, manifest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixdec") / "data"
    return (root, *_fill(root))


def _params(project_root, env: str = "test") -> dict:
    """The ``pixel_decoder`` block as Kedro merges it for ``env`` (base overlaid key by key)."""
    from kedro.config import OmegaConfigLoader

    from rla_pipeline.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(str(project_root / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]["pixel_decoder"]


def test_every_output_is_in_the_catalog_and_every_env_parses(project_root):
    from rla_pipeline.models.pixel_decoder import PixelDecoderConfig
    from rla_pipeline.pipelines.pixel_decoder.pipeline import create_pipeline
    from rla_pipeline.stages.pixel_decoder import PixelDecoderStageConfig

    catalog = yaml.safe_load((project_root / "conf/base/catalog_pixel_decoder.yml").read_text())
    assert create_pipeline().all_outputs() == set(catalog)
    # the decoded world-model node reads the trained world models (catalog inputs of the world_model pipeline)
    wm_catalog = yaml.safe_load((project_root / "conf/base/catalog_world_model.yml").read_text())
    external = create_pipeline().inputs() - set(catalog)
    assert {"world_model", "wm_baseline_deterministic", "wm_baseline_deterministic_residual",
            "wm_baseline_absolute_flow"} <= external and external & set(wm_catalog) == {
        "world_model", "wm_baseline_deterministic", "wm_baseline_deterministic_residual", "wm_baseline_absolute_flow"}
    for env in ("local", "test", "paper"):  # local = base alone
        p = PixelDecoderStageConfig.from_dict(_params(project_root, env))  # strict: an unknown key raises
        PixelDecoderConfig.from_dict(p.model)


def test_split_is_the_rla_split_by_episode(data, project_root):
    from rla_pipeline.stages import pixel_decoder as stage
    from rla_pipeline.stages import rla

    _, _, _, index, manifest = data
    params = _params(project_root)
    splits = stage.split_pixel_decoder_episodes(index, manifest, params, seed=0)
    same = rla.split_episodes(index, manifest, {"split": params["split"]}, seed=0)
    pd.testing.assert_frame_equal(splits, same)
    assert set(splits.loc[splits.task == "PokeCube-v1", "split"]) == {"heldout_task"}
    assert {"train", "val"} <= set(splits.split)


def test_dataset_pairs_each_frame_with_its_own_tokens(data, project_root):
    import torch

    from rla_pipeline.stages.pixel_decoder import TokenFrameDataset

    _, store, cache, _, _ = data
    eid = cache.episode_ids()[0]
    ds = TokenFrameDataset(cache, store, [eid], image_size=32)
    assert len(ds) == 24 and ds.num_tokens == 16 and ds.token_dim == 384
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    torch.testing.assert_close(item["tokens"], torch.from_numpy(np.asarray(cache.tokens(eid)[5], dtype=np.float32)))
    frames = store.read_frames(eid)
    assert not np.array_equal(frames[5], frames[20])  # the scene moves, so the pairing is checkable
    from rla_pipeline.models.pixel_decoder import frames_to_images

    torch.testing.assert_close(item["image"], frames_to_images(frames[5:6], 32)[0], atol=1 / 255 + 1e-6, rtol=0)
    strided = TokenFrameDataset(cache, store, [eid], image_size=32, frame_stride=4)
    assert len(strided) == 6 and strided.fingerprint != ds.fingerprint


def test_wmrl_gets_a_decoder_trained_on_every_task_the_held_out_one_is_refused(data, project_root):
    """``pixel_decoder_model_all_tasks``: the same split's train episodes plus every held-out-task episode (the
    generalisation decoder keeps PokeCube-v1 out); its record names every task and is of its own weights, and the
    WMRL check passes it while it refuses the held-out decoder for PokeCube-v1 (a Table 3 task)."""
    from rla_pipeline.stages import pixel_decoder as stage
    from rla_pipeline.stages.common import episode_ids
    from rla_pipeline.stages.wmrl import check_decoder_covers_tasks
    from rla_pipeline.utils.hashing import state_dict_digest

    _, store, cache, index, manifest = data
    params = _params(project_root)
    # which episodes it trains on is under test, not how well it decodes
    params["trainer"].update(max_steps=2, warmup_steps=0, val_every=2, checkpoint_every=2, log_every=1)
    splits = stage.split_pixel_decoder_episodes(index, manifest, params, seed=0)
    model, record = stage.train_pixel_decoder_all_tasks(cache, store, splits, params, "cpu")
    assert sorted(record.task) == sorted(TASKS) and (record.train_episodes > 0).all()
    poke = record.set_index("task").loc["PokeCube-v1"]
    assert poke.train_episodes == len(splits[splits.task == "PokeCube-v1"])
    assert poke.train_frames == 24 * poke.train_episodes
    assert record.train_episodes.sum() == len(episode_ids(splits, "train")) + len(episode_ids(splits, "heldout_task"))
    assert set(record.decoder_digest) == {state_dict_digest(model)}
    check_decoder_covers_tasks(model, record, TASKS, table3=("PokeCube-v1",))
    # the held-out decoder (pixel_decoder_model) with its own record: the check fires for the held-out task
    held, held_ds = stage._train_decoder(cache, store, splits, params, "cpu", None, include_heldout_task=False,
                                         run_name="pixel_decoder")
    held_record = stage.decoder_training_record(held, held_ds, splits)
    assert "PokeCube-v1" not in set(held_record.task)
    with pytest.raises(ValueError, match="PokeCube-v1"):
        check_decoder_covers_tasks(held, held_record, TASKS, table3=("PokeCube-v1",))
    with pytest.raises(ValueError, match="another decoder"):  # a record does not vouch for another decoder
        check_decoder_covers_tasks(held, record, TASKS, table3=("PokeCube-v1",))


@pytest.mark.slow
def test_decoder_learns_held_out_reconstruction_beats_the_mean_image(data, project_root):
    from matplotlib.figure import Figure

    from rla_pipeline.stages import pixel_decoder as stage

    _, store, cache, index, manifest = data
    params = _params(project_root)
    params["trainer"]["max_steps"] = 60
    splits = stage.split_pixel_decoder_episodes(index, manifest, params, seed=0)
    model = stage.train_pixel_decoder(cache, store, splits, params, "cpu")
    table, grid = stage.evaluate_pixel_decoder(model, cache, store, splits, params)
    t = table.set_index(["split", "method"])
    assert set(t.index) == {(s, m) for s in ("val", "heldout_task") for m in ("decoder", "mean_image")}
    val_dec, val_mean = t.loc[("val", "decoder")], t.loc[("val", "mean_image")]
    assert val_dec.psnr > val_mean.psnr + 1.0 and val_dec.mse < 0.8 * val_mean.mse  # episodes never trained on
    assert val_dec.ssim > val_mean.ssim
    assert table.lpips.isna().all() and table.lpips_status.str.startswith("unavailable").all()
    assert isinstance(grid, Figure) and len(grid.axes) == 2 * params["eval"]["grid_frames"]


@pytest.mark.slow
def test_kedro_run_pixel_decoder_saves_the_model_and_tables_and_logs_a_nested_mlflow_run(
        data, trained, project_root, monkeypatch, mlflow_uri):
    """`kedro run --env=test --pipelines=pixel_decoder` on a data root that ingestion + features + rla + world_model
    filled (the world models and split of the ``trained`` fixture, saved where the catalog reads them)."""
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from mlflow import MlflowClient

    from rla_pipeline.datasets.torch_model import TorchModelDataset
    from rla_pipeline.models.pixel_decoder import PixelDecoder, decode_tokens

    root, _, cache, _, _ = data
    for name, model in trained["models"].items():  # what the world_model pipeline leaves in the data root
        TorchModelDataset(str(root / "06_models" / f"{name}.safetensors")).save(model)
    (root / "05_model_input").mkdir(parents=True, exist_ok=True)
    trained["splits"].to_parquet(root / "05_model_input" / "episode_splits.parquet", index=False)
    monkeypatch.setenv("RLA_DATA_ROOT", str(root))
    monkeypatch.chdir(project_root)
    bootstrap_project(project_root)
    with KedroSession.create(project_path=project_root, env="test") as session:
        session.run(pipeline_names=["pixel_decoder"])
    model = TorchModelDataset(str(root / "06_models" / "pixel_decoder.safetensors")).load()
    assert isinstance(model, PixelDecoder) and model.config.image_size == 32
    assert not torch.allclose(model.token_std, torch.ones_like(model.token_std))  # statistics saved with the weights
    frames = decode_tokens(model, cache.tokens(cache.episode_ids()[0])[:3])
    assert frames.shape == (3, 32, 32, 3)
    table = pd.read_parquet(root / "08_reporting" / "pixel_decoder_metrics.parquet")
    assert {"psnr", "ssim", "lpips", "lpips_status"} <= set(table.columns) and np.isfinite(table.psnr).all()
    png = (root / "08_reporting" / "pixel_decoder_grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    splits = pd.read_parquet(root / "05_model_input" / "pixel_decoder_splits.parquet")
    assert set(splits.split) == {"train", "val", "heldout_task"}
    # WMRL's decoder: the same split with the held-out task added, and its training record
    all_tasks = TorchModelDataset(str(root / "06_models" / "pixel_decoder_all_tasks.safetensors")).load()
    record = pd.read_parquet(root / "06_models" / "pixel_decoder_all_tasks_training.parquet")
    assert sorted(record.task) == sorted(TASKS) and isinstance(all_tasks, PixelDecoder)
    from rla_pipeline.utils.hashing import state_dict_digest

    assert set(record.decoder_digest) == {state_dict_digest(all_tasks)} != {state_dict_digest(model)}
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    child = [r for r in runs if r.data.tags.get("mlflow.runName") == "pixel_decoder"]
    assert child and child[0].data.tags.get("mlflow.parentRunId")  # the trainer's nested run
    assert "val/psnr" in child[0].data.metrics
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert any("pixel_decoder.val.decoder.psnr" in r.data.metrics for r in parent)
    # the decoded world-model node ran on the saved world models: table + pictures, and their MLflow metrics
    decoded = pd.read_parquet(root / "08_reporting" / "wm_decoded_table.parquet")
    assert {"rla_wm", "absolute_flow", "decoded_truth", "copy"} <= set(decoded.model)
    assert np.isfinite(decoded.ssim).all() and np.isfinite(decoded.psnr_ci_low).all()
    assert (root / "08_reporting" / "wm_decoded_rollouts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(any(k.startswith("wm_decoded.rla_wm.") for k in r.data.metrics) for r in parent)


# ------------------------------------------------------------------------------ decoded world-model predictions
def _block(project_root, name: str, env: str = "test") -> dict:
    from kedro.config import OmegaConfigLoader

    from rla_pipeline.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(str(project_root / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"][name]


@pytest.fixture(scope="module")
def trained(data, project_root):
    """The test-scale decoder, RLA and four world models trained on ``data`` (the RLA split for all of them)."""
    from rla_pipeline.stages import pixel_decoder as stage
    from rla_pipeline.stages import rla as rla_stage
    from rla_pipeline.stages import world_model as wm

    _, store, cache, index, manifest = data
    dp, rp, wp = _params(project_root), _block(project_root, "rla"), _block(project_root, "world_model")
    dp["trainer"]["max_steps"] = 60
    # barely trained world models are enough here (the decoded scores, not the models, are under test)
    rp["trainer"]["max_steps"] = wp["trainer"]["max_steps"] = 10
    wp["budget"] = "same_steps"
    dec_splits = stage.split_pixel_decoder_episodes(index, manifest, dp, seed=0)
    splits = rla_stage.split_episodes(index, manifest, rp, seed=0)
    decoder = stage.train_pixel_decoder(cache, store, dec_splits, dp, "cpu")
    rla = rla_stage.train_rla(cache, splits, index, rp, "cpu")
    models = {"world_model": wm.train_rla_world_model(rla, cache, splits, index, wp, "cpu"),
              "wm_baseline_deterministic": wm.train_deterministic_baseline(cache, splits, index, wp, "cpu", None, 0, rp),
              "wm_baseline_deterministic_residual": wm.train_deterministic_residual_baseline(
                  cache, splits, index, wp, "cpu", None, 0, rp),
              "wm_baseline_absolute_flow": wm.train_absolute_flow_baseline(cache, splits, index, wp, "cpu", None, 0, rp)}
    return dict(decoder=decoder, models=models, splits=splits, dec_splits=dec_splits, dp=dp, wp=wp)


@pytest.mark.slow
def test_decoded_world_model_table_scores_real_decoded_frames_with_the_token_tables_pairs(data, trained):
    import torch
    from matplotlib.figure import Figure

    from rla_pipeline.evaluation import image_metrics as im
    from rla_pipeline.models.pixel_decoder import decode_tokens, frames_to_images
    from rla_pipeline.stages import world_model as wm
    from rla_pipeline.stages.world_model_images import evaluate_decoded_world_models

    _, store, cache, index, _ = data
    m, wp = trained["models"], trained["wp"]
    table, fig = evaluate_decoded_world_models(
        trained["decoder"], m["world_model"], m["wm_baseline_deterministic"], m["wm_baseline_deterministic_residual"],
        m["wm_baseline_absolute_flow"], cache, store, trained["splits"], index, trained["dec_splits"], wp,
        trained["dp"], seed=0)
    token_table, _, _ = wm.evaluate_world_models(
        m["world_model"], m["wm_baseline_deterministic"], m["wm_baseline_absolute_flow"], cache, trained["splits"],
        index, wp, seed=0, wm_baseline_deterministic_residual=m["wm_baseline_deterministic_residual"])
    assert set(table.model) == {"rla_wm", "deterministic", "deterministic_residual", "absolute_flow",
                                "decoded_truth", "copy", "copy_frame"}
    # every horizon the token table reports, on the very same pairs and episodes
    tok = token_table[token_table.model == "copy"].set_index("horizon")
    for h, g in table.groupby("horizon"):
        assert (g.pairs == tok.loc[h, "pairs"]).all() and (g.episodes == tok.loc[h, "episodes"]).all()
    assert set(table.horizon) == set(tok.index)
    assert table.ssim.between(-1, 1).all() and (table.psnr > 0).all() and (table.psnr <= 60).all()
    assert ((table.ssim_ci_low <= table.ssim + 1e-9) & (table.ssim <= table.ssim_ci_high + 1e-9)).all()
    ref = table[table.model == "rla_wm"]
    assert ref.ref_minus_ssim.isna().all() and table[table.model != "rla_wm"].ref_minus_ssim.notna().all()
    assert table.lpips.isna().all() and table.lpips_status.str.startswith("unavailable").all()

    # the numbers are of real decoded frames: recompute the decoder ceiling at the longest horizon by hand
    from rla_pipeline.evaluation.metrics import rollout_batch
    from rla_pipeline.stages.common import action_episode_ids

    h = int(table.horizon.max())
    val = wm.interleave_by_task(action_episode_ids(cache, trained["splits"], "val"), index)
    b = rollout_batch(cache, val, h, wp["eval"]["chunk"], m["world_model"].config.max_actions, wp["eval"]["stride"],
                      wp["eval"]["max_pairs"])
    size = trained["decoder"].config.image_size
    truth = torch.cat([frames_to_images(store.read_frames(e)[t + h : t + h + 1], size)
                       for e, t in zip(b.pairs.episode_id, b.pairs.t)])
    decoded = im.hwc_to_images(decode_tokens(trained["decoder"], b.target))
    at_h = table[table.horizon == h].set_index("model")
    assert at_h.loc["decoded_truth", "ssim"] == pytest.approx(float(im.ssim(decoded, truth).mean()), abs=0.02)
    # the scene moves: the decoded true future beats decoding the start frame (copy), which the true frame t (no
    # decoder) shows is a real change, not the decoder's blur
    assert at_h.loc["decoded_truth", "ssim"] > at_h.loc["copy", "ssim"]
    assert at_h.loc["decoded_truth", "psnr"] > at_h.loc["copy", "psnr"]
    assert at_h.loc["copy_frame", "ssim"] < 0.99

    assert isinstance(fig, Figure)
    rows = 2 + 4  # ground truth, decoded truth, RLA-WM and three baselines
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(fig.axes) % rows == 0 and len(shown) >= rows  # images, not empty axes
    labels = {ax.get_ylabel().replace("\n", " ") for ax in fig.axes}
    assert {"ground truth", "decoded truth", wm.NAMES["rla_wm"], wm.NAMES["absolute_flow"]} <= labels


@pytest.mark.slow
def test_decoded_scores_use_lpips_only_from_local_weights(data, trained, tmp_path):
    import torch
    from torchvision.models import alexnet

    from rla_pipeline.evaluation.image_metrics import load_lpips
    from rla_pipeline.stages.common import action_episode_ids
    from rla_pipeline.stages.pixel_decoder import TokenFrameDataset
    from rla_pipeline.stages.world_model_images import decoded_pair_scores, decoded_table

    _, store, cache, index, _ = data
    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), tmp_path / "alex.pth")  # stand-in weights: plumbing only
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))},
               tmp_path / "lins.pth")
    lpips, status = load_lpips(tmp_path / "alex.pth", tmp_path / "lins.pth")
    assert status == "available"
    val = action_episode_ids(cache, trained["splits"], "val")
    frames = TokenFrameDataset(cache, store, val, trained["decoder"].config.image_size)
    wm_model = trained["models"]["world_model"]
    scores = decoded_pair_scores(trained["decoder"], {"rla_wm": wm_model}, cache, frames, val, 5, 5,
                                 wm_model.config.max_actions, 8, 4, seed=0, lpips=lpips)
    t = decoded_table(scores, {}, n_boot=50, seed=0, lpips_status=status).set_index("model")
    assert np.isfinite(t.lpips).all() and (t.lpips > 0).all() and t.lpips.nunique() == len(t)
    assert np.isfinite(t.lpips_ci_low).all() and (t.lpips_status == "available").all()
