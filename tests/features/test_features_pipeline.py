"""The features pipeline through Kedro's runner (real episodes, tiny random DINO), and its parameter files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rla_pipeline.features.config import FeaturesConfig

CONF = Path(__file__).resolve().parents[2] / "conf"


def _features_params(env: str) -> dict:
    """The ``features`` block as Kedro merges it for ``--env=env`` (base, then the env's overrides)."""
    from rla_pipeline import settings

    args = {**settings.CONFIG_LOADER_ARGS, "default_run_env": env}
    loader = settings.CONFIG_LOADER_CLASS(str(CONF), **args)
    return loader["parameters"]["features"]


@pytest.mark.parametrize("env", ["base", "test", "paper"])
def test_every_env_gives_a_valid_features_config(env):
    FeaturesConfig.from_dict(_features_params(env))  # strict: an unknown or mistyped key, or a bad value, raises


def test_paper_env_never_falls_back_to_random_weights():
    cfg = FeaturesConfig.from_dict(_features_params("paper"))
    assert cfg.encoder.weights == "pretrained" and cfg.encoder.allow_random_fallback is False


def test_global_device_applies_only_when_the_encoder_says_auto():
    auto = FeaturesConfig.from_dict({"encoder": {"device": "auto"}})
    assert auto.with_device("cpu").encoder.device == "cpu"
    assert auto.encoder.device == "auto"  # the original is left as it was
    pinned = FeaturesConfig.from_dict({"encoder": {"device": "cpu"}})
    assert pinned.with_device("cuda:1").encoder.device == "cpu"


def _run(cache_root: Path, store, params: dict) -> pd.DataFrame:
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from rla_pipeline.datasets.episode_store import EpisodeStoreDataset
    from rla_pipeline.datasets.feature_cache import FeatureCacheDataset
    from rla_pipeline.pipelines.features.pipeline import create_pipeline

    catalog = DataCatalog(
        {
            "feature_cache": FeatureCacheDataset(str(cache_root)),
            "episodes": EpisodeStoreDataset(str(store.root)),
            "episode_index": MemoryDataset(store.index()),
            "params:features": MemoryDataset(params),
            "params:device": MemoryDataset("cpu"),
            "feature_manifest": MemoryDataset(),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog.load("feature_manifest")


def test_pipeline_fills_cache_and_reruns_without_work(store, tmp_path):
    params = _features_params("test")
    manifest = _run(tmp_path / "cache", store, params)
    assert sorted(manifest["episode_id"]) == store.episode_ids()
    assert set(manifest["weights_tag"]) == {"random-init"} and set(manifest["tokens"]) == {16}
    entries = sorted((tmp_path / "cache" / "entries").iterdir())
    stamps = [p.stat().st_mtime_ns for p in entries]
    again = _run(tmp_path / "cache", store, params)
    pd.testing.assert_frame_equal(again, manifest)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "entries").iterdir())] == stamps
