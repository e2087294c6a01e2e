"""The ``pixel_decoder`` stage and pipeline on small real episodes (synthetic renderer -> mp4, random-init DINO cache)."""
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
        data, project_root, monkeypatch, mlflow_uri):
    """`kedro run --env=test --pipelines=pixel_decoder` on a data root that ingestion + features filled."""
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from mlflow import MlflowClient

    from rla_pipeline.datasets.torch_model import TorchModelDataset
    from rla_pipeline.models.pixel_decoder import PixelDecoder, decode_tokens

    root, _, cache, _, _ = data
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
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    child = [r for r in runs if r.data.tags.get("mlflow.runName") == "pixel_decoder"]
    assert child and child[0].data.tags.get("mlflow.parentRunId")  # the trainer's nested run
    assert "val/psnr" in child[0].data.metrics
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert any("pixel_decoder.val.decoder.psnr" in r.data.metrics for r in parent)
