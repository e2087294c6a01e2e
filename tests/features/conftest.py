"""Fixtures: a small store of real synthetic episodes (mp4 + parquet + masks) and tiny random-weight encoders."""
from __future__ import annotations

import shutil

import pytest

from rla_pipeline.episodes.format import EpisodeStore
from rla_pipeline.episodes.synthetic import write_synthetic_store
from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig

TINY = dict(model_name="vit_small_patch14_dinov2.lvd142m", image_size=28, weights="random", device="cpu", batch_size=8)


@pytest.fixture(scope="session")
def _store_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes_template")
    store = EpisodeStore(root)
    # 2 demo + 2 play + 2 actionless episodes of 20 frames at 48 px: 6 episodes, 120 frames.
    write_synthetic_store(store, n_per_kind=2, num_frames=20, size=48)
    return root


@pytest.fixture()
def store(_store_template, tmp_path):
    """A private copy of the template store (tests may rewrite episodes)."""
    root = tmp_path / "episodes"
    shutil.copytree(_store_template, root)
    return EpisodeStore(root)


@pytest.fixture(scope="session")
def tiny_encoder():
    return DinoEncoder(EncoderConfig(**TINY))


def make_encoder(**overrides) -> DinoEncoder:
    return DinoEncoder(EncoderConfig(**{**TINY, **overrides}))
