"""The features pipeline through Kedro's runner (real episodes, tiny random DINO), and its parameter files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from rla_pipeline.features.config import FeaturesConfig

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("env", ["base", "test", "paper"])
def test_parameter_files_build_configs(env):
    params = yaml.safe_load((CONF / env / "parameters_features.yml").read_text())["features"]
    cfg = FeaturesConfig.from_dict(params)
    if env == "paper":
        assert cfg.encoder.model_name == "vit_large_patch16_dinov3.lvd1689m" and cfg.encoder.image_size == 512
        assert cfg.encoder.weights == "pretrained" and cfg.encoder.allow_random_fallback is False
    assert cfg.with_device("cpu").encoder.device == ("cpu" if cfg.encoder.device == "auto" else cfg.encoder.device)


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
    params = yaml.safe_load((CONF / "test" / "parameters_features.yml").read_text())["features"]
    manifest = _run(tmp_path / "cache", store, params)
    assert sorted(manifest["episode_id"]) == store.episode_ids()
    assert set(manifest["weights_tag"]) == {"random-init"} and set(manifest["tokens"]) == {16}
    entries = sorted((tmp_path / "cache" / "entries").iterdir())
    stamps = [p.stat().st_mtime_ns for p in entries]
    again = _run(tmp_path / "cache", store, params)
    pd.testing.assert_frame_equal(again, manifest)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache" / "entries").iterdir())] == stamps
