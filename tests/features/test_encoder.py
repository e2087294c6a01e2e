"""DinoEncoder: shapes for DINOv2/DINOv3 at two sizes, prefix tokens dropped, weights sources, loud random fallback."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rla_pipeline.features.encoder import DinoEncoder, EncoderConfig, WeightsUnavailableError

from .conftest import make_encoder


@pytest.mark.parametrize(
    "model_name, patch, sizes, prefix",
    [
        ("vit_small_patch14_dinov2.lvd142m", 14, (28, 56), 1),
        ("vit_small_patch16_dinov3.lvd1689m", 16, (32, 64), 5),
    ],
)
def test_patch_token_shapes_two_models_two_sizes(model_name, patch, sizes, prefix):
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    for size in sizes:
        enc = make_encoder(model_name=model_name, image_size=size)
        out = enc.encode(frames)
        n = (size // patch) ** 2
        assert out.shape == (3, n, 384) and out.dtype == torch.float32
        assert enc.num_tokens == n and enc.token_dim == 384 and enc.num_prefix_tokens == prefix
        assert torch.isfinite(out).all()


def test_register_tokens_are_dropped():
    enc = make_encoder(model_name="vit_small_patch14_reg4_dinov2.lvd142m", image_size=28)
    frames = np.full((2, 28, 28, 3), 128, dtype=np.uint8)
    out = enc.encode(frames)
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() * enc._scale + enc._shift)
    with torch.inference_mode():
        full = enc.model.forward_features(x)  # (B, 1 cls + 4 registers + 4 patches, D)
    assert full.shape[1] == 5 + 4 and out.shape[1] == 4
    torch.testing.assert_close(out, full[:, 5:])


def test_batching_does_not_change_tokens():
    frames = np.random.default_rng(1).integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    a = make_encoder(batch_size=2).encode(frames)
    b = make_encoder(batch_size=5).encode(frames)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mask_multiplies_frames_before_encoding():
    frames = np.random.default_rng(2).integers(1, 255, (2, 48, 48, 3), dtype=np.uint8)
    masks = np.zeros((2, 48, 48), dtype=bool)
    enc = make_encoder()
    torch.testing.assert_close(enc.encode(frames, masks), enc.encode(np.zeros_like(frames)))
    assert not torch.allclose(enc.encode(frames, masks), enc.encode(frames))
    unmasked = make_encoder(mask_background=False)
    torch.testing.assert_close(unmasked.encode(frames, masks), unmasked.encode(frames))


def test_random_init_is_seeded():
    assert make_encoder(seed=3).weights_digest == make_encoder(seed=3).weights_digest
    assert make_encoder(seed=3).weights_digest != make_encoder(seed=4).weights_digest


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_from_local_file(tmp_path, suffix):
    from safetensors.torch import save_file

    src = make_encoder(seed=7)
    sd = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    path = tmp_path / f"dino{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"model": sd}, path)
    enc = make_encoder(weights=str(path), seed=0)
    assert enc.weights_digest == src.weights_digest
    assert enc.weights_tag.startswith("file:")


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_pretrained_unavailable_paper_config_raises_with_instructions(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsUnavailableError, match=r"features\.encoder\.weights: /path/to/model\.safetensors"):
        make_encoder(weights="pretrained", allow_random_fallback=False)


def test_pretrained_unavailable_falls_back_loudly_and_tags_the_run(monkeypatch, tmp_path, caplog, mlflow_uri):
    import mlflow

    _offline(monkeypatch, tmp_path)
    mlflow.set_experiment("features-test")
    with mlflow.start_run() as run:
        with caplog.at_level(logging.WARNING, logger="rla_pipeline.features.encoder"):
            enc = make_encoder(weights="pretrained", allow_random_fallback=True, seed=5)
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert enc.weights_tag == "random-init" and enc.describe()["weights_tag"] == "random-init"
    assert enc.weights_digest == make_encoder(weights="random", seed=5).weights_digest
    assert tags["encoder_weights"] == "random-init"
    text = caplog.text
    assert "!" * 50 in text and "RANDOMLY INITIALISED" in text and "features.encoder.weights" in text


def test_bad_image_size_is_rejected():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        DinoEncoder(EncoderConfig(image_size=30, weights="random", device="cpu"))
