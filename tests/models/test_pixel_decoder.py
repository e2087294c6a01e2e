"""The DINO-to-RGB decoder: config checks, shapes, the mean-image start, decode_tokens, fitting a small batch."""
from __future__ import annotations

import pytest
import torch

from rla_pipeline.models.pixel_decoder import (PixelDecoder, PixelDecoderConfig, decode_tokens, frames_to_images,
                                               pixel_decoder_loss)


def _decoder(**kw) -> PixelDecoder:
    cfg = {"num_tokens": 16, "token_dim": 12, "image_size": 32, "channels": [16, 8, 8], "groups": 4, **kw}
    torch.manual_seed(0)
    return PixelDecoder(PixelDecoderConfig(**cfg))


def test_config_rejects_shapes_it_cannot_build():
    with pytest.raises(ValueError, match="square"):
        PixelDecoderConfig(num_tokens=15)
    with pytest.raises(ValueError, match="divisible"):
        PixelDecoderConfig(image_size=62, channels=[16, 8, 8])  # 62 / 4 is not whole
    with pytest.raises(ValueError, match="groups"):
        PixelDecoderConfig(channels=[16, 6], groups=4)


@pytest.mark.parametrize("num_tokens", [16, 64, 9])  # grid 4 -> base 8 (resize), grid 8 = base, grid 3 (odd)
def test_output_shape_for_any_token_grid(num_tokens):
    m = _decoder(num_tokens=num_tokens)
    out = m(torch.randn(5, num_tokens, 12))
    assert out.shape == (5, 3, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="expects tokens"):
        m(torch.randn(5, num_tokens + 1, 12))


def test_untrained_decoder_outputs_the_training_mean_image():
    m = _decoder()
    mean_image = torch.rand(3, 32, 32)
    m.set_stats(torch.randn(12), torch.rand(12) + 0.5, mean_image)
    out = m(torch.randn(4, 16, 12))
    torch.testing.assert_close(out, mean_image.expand(4, -1, -1, -1))


def test_decode_tokens_gives_uint8_frames_and_undoes_a_normalisation():
    m = _decoder()
    m.set_stats(torch.zeros(12), torch.ones(12), torch.full((3, 32, 32), 0.5))
    with torch.no_grad():  # leave the mean image: make the output depend on the tokens
        m.to_rgb.weight.normal_(0, 0.05)
    m.train()
    tokens = torch.randn(2, 3, 16, 12)  # (B rollouts, H horizons, N, D)
    frames = decode_tokens(m, tokens)
    assert frames.shape == (2, 3, 32, 32, 3) and frames.dtype == torch.uint8
    assert m.training  # restored
    expect = (m.eval()(tokens.reshape(6, 16, 12)).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    torch.testing.assert_close(frames.reshape(6, 32, 32, 3), expect)
    mean, std = torch.randn(12), torch.rand(12) + 0.5
    normalised = (tokens - mean) / std
    torch.testing.assert_close(decode_tokens(m, normalised, stats=(mean, std)), frames, atol=1, rtol=0)
    assert not torch.equal(decode_tokens(m, normalised), frames)  # without stats these are other tokens
    half = decode_tokens(m, tokens.half().numpy())  # fp16 cache entries as numpy arrays
    assert half.shape == frames.shape


def test_decoder_fits_a_small_batch_far_below_the_mean_image_error():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(8, 16, 12, generator=g)
    images = torch.full((8, 3, 32, 32), 0.2)
    for i in range(8):  # a coloured 10 px square at a different place in each frame (scenes, not pixel noise)
        y, x = (int(v) for v in torch.randint(0, 22, (2,), generator=g))
        images[i, :, y : y + 10, x : x + 10] = torch.rand(3, 1, 1, generator=g)
    m = _decoder()
    m.set_stats(torch.zeros(12), torch.ones(12), images.mean(0))
    baseline = ((images.mean(0) - images) ** 2).mean().item()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(100):
        loss, metrics = pixel_decoder_loss(m, {"tokens": tokens, "image": images})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["mse"].item() < 0.5 * baseline


def test_frames_to_images_resizes_and_scales():
    frames = torch.zeros(2, 40, 40, 3, dtype=torch.uint8)
    frames[..., 0] = 255
    imgs = frames_to_images(frames, 16)
    assert imgs.shape == (2, 3, 16, 16)
    torch.testing.assert_close(imgs[:, 0], torch.ones(2, 16, 16))
    torch.testing.assert_close(imgs[:, 1:], torch.zeros(2, 2, 16, 16))


def test_paper_size_builds_and_runs_on_the_meta_device(project_root):
    """conf/paper's decoder (32 x 32 tokens x 1024 dims -> 512 px) builds and runs forward + loss + backward without
    memory (meta tensors): any tensor the forward pass made on the CPU would fail here."""
    import yaml

    block = yaml.safe_load((project_root / "conf/paper/parameters_pixel_decoder.yml").read_text())["pixel_decoder"]
    cfg = PixelDecoderConfig.from_dict({"num_tokens": 1024, "token_dim": 1024, **block["model"]})
    with torch.device("meta"):
        m = PixelDecoder(cfg)
    n = sum(p.numel() for p in m.parameters())
    print(f"paper-size pixel decoder: {n / 1e6:.1f} M parameters")
    assert 10e6 < n < 200e6
    batch = {"tokens": torch.empty(2, 1024, 1024, device="meta"), "image": torch.empty(2, 3, 512, 512, device="meta")}
    loss, _ = pixel_decoder_loss(m, batch)
    loss.backward()
    assert m.to_rgb.weight.grad is not None and m.to_rgb.weight.grad.device.type == "meta"


def test_upsampling_a_batch_too_large_for_one_kernel_call_is_sliced_with_the_same_result():
    """CUDA's nearest upsampling refuses INT_MAX elements (the paper's 512 px decoder at batch 64 on an H200 failed
    with it): past ``max_elements`` the batch is upsampled in slices, forward and backward as if in one piece."""
    from rla_pipeline.models.pixel_decoder import Upsample

    torch.manual_seed(0)
    up = Upsample(4, 3)
    x = torch.randn(5, 4, 6, 6, requires_grad=True)
    whole = up(x)
    (g_whole,) = torch.autograd.grad(whole.square().sum(), x)
    calls = []
    hook = up.conv.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    up.max_elements = 4 * 4 * 36 * 2  # two upsampled samples per slice
    sliced = up(x)
    (g_sliced,) = torch.autograd.grad(sliced.square().sum(), x)
    hook.remove()
    assert calls == [2, 2, 1]
    assert sliced.shape == whole.shape == (5, 3, 12, 12)
    torch.testing.assert_close(sliced, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_sliced, g_whole, atol=1e-5, rtol=1e-5)
