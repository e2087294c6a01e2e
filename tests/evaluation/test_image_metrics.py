"""PSNR / SSIM on pairs with known answers, SSIM against an independent reference, LPIPS only from local files."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rla_pipeline.evaluation import image_metrics as im


def _smooth_image(seed: int, size: int = 40) -> torch.Tensor:
    """A (3, size, size) image in [0.1, 0.9] with structure at several scales (not just noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 5, 5, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    img = img + 0.1 * torch.rand(3, size, size, generator=g)
    return (0.1 + 0.8 * (img - img.min()) / (img.max() - img.min())).float()


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """skimage's algorithm (gaussian_weights=True, sigma 1.5, use_sample_covariance=False, data_range 1) written with
    scipy's Gaussian filter: filter the whole image (reflect padding), then drop the 5-px border skimage drops."""
    from scipy.ndimage import gaussian_filter

    vals = []
    for c in range(a.shape[0]):
        x, y = a[c].astype(np.float64), b[c].astype(np.float64)
        f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5)  # noqa: E731  radius 5 -> an 11 x 11 window
        ux, uy = f(x), f(y)
        vx, vy, vxy = f(x * x) - ux * ux, f(y * y) - uy * uy, f(x * y) - ux * uy
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        vals.append(s[5:-5, 5:-5].mean())
    return float(np.mean(vals))


def test_identical_images_give_ssim_one_and_infinite_or_capped_psnr():
    a = _smooth_image(0)
    assert im.ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(im.psnr(a, a).item())
    assert im.psnr(a, a, max_db=60.0).item() == pytest.approx(60.0)
    assert im.mse(a, a).item() == 0.0


def test_psnr_of_a_known_perturbation_is_the_analytic_value():
    a = _smooth_image(1)
    d = 0.05
    sign = torch.ones_like(a)
    sign[..., ::2, :] = -1.0  # +-d on alternate rows: MSE is exactly d**2 (no clipping: a is in [0.1, 0.9])
    assert im.psnr(a, a + d * sign).item() == pytest.approx(-20 * math.log10(d), abs=1e-3)
    # Gaussian noise of std sigma: MSE ~ sigma**2, PSNR ~ -20 log10(sigma) (within sampling error)
    sigma = 0.1
    noisy = a + sigma * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    assert im.psnr(a, noisy).item() == pytest.approx(-20 * math.log10(sigma), abs=0.15)


def test_psnr_and_ssim_are_per_image_and_read_uint8():
    a = torch.stack([_smooth_image(2), _smooth_image(3)])
    b = a.clone()
    b[1] = (b[1] + 0.2).clamp(0, 1)
    p, s = im.psnr(a, b), im.ssim(a, b)
    assert p.shape == s.shape == (2,) and math.isinf(p[0].item()) and np.isfinite(p[1].item())
    assert s[0].item() == pytest.approx(1.0, abs=1e-6) and s[1].item() < 1.0
    a8, b8 = (a * 255).round().to(torch.uint8), (b * 255).round().to(torch.uint8)
    torch.testing.assert_close(im.ssim(a8, b8), im.ssim(a8.float() / 255, b8.float() / 255))
    frames = a8.permute(0, 2, 3, 1)  # (B, H, W, 3) like videos and decode_tokens
    torch.testing.assert_close(im.hwc_to_images(frames), a8.float() / 255)


def test_ssim_of_constant_images_is_the_luminance_term():
    # no structure or contrast: SSIM reduces to (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b = torch.full((3, 16, 16), 0.3), torch.full((3, 16, 16), 0.7)
    c1 = 0.01**2
    assert im.ssim(a, b).item() == pytest.approx((2 * 0.3 * 0.7 + c1) / (0.3**2 + 0.7**2 + c1), rel=1e-5)


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.3])
def test_ssim_matches_the_reference_algorithm(sigma):
    a = _smooth_image(4)
    b = (a + sigma * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert im.ssim(a, b).item() == pytest.approx(_ssim_reference(a.numpy(), b.numpy()), abs=1e-5)


def test_ssim_matches_skimage_when_installed():
    metrics = pytest.importorskip("skimage.metrics")  # not in the project's environment today; runs where it is
    a = _smooth_image(5)
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    ref = metrics.structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=-1,
                                        data_range=1.0, gaussian_weights=True, use_sample_covariance=False)
    assert im.ssim(a, b).item() == pytest.approx(ref, abs=1e-5)


def test_ssim_falls_as_noise_grows_and_rejects_tiny_or_mismatched_images():
    a = _smooth_image(6)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(a.shape, generator=g)
    values = [im.ssim(a, (a + s * noise).clamp(0, 1)).item() for s in (0.0, 0.05, 0.2, 0.5)]
    assert values == sorted(values, reverse=True) and values[-1] < 0.5
    with pytest.raises(ValueError, match="at least 11x11"):
        im.ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="differ in shape"):
        im.psnr(torch.rand(3, 16, 16), torch.rand(3, 16, 12))


def test_lpips_is_unavailable_without_local_weights(tmp_path):
    model, status = im.load_lpips(None, None)
    assert model is None and status.startswith("unavailable") and "nothing is downloaded" in status
    model, status = im.load_lpips(tmp_path / "missing.pth", tmp_path / "also-missing.pth")
    assert model is None and "not found" in status


def test_lpips_from_local_files_is_zero_for_identical_images_and_refuses_wrong_weights(tmp_path):
    from torchvision.models import alexnet

    torch.manual_seed(0)
    backbone = tmp_path / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), backbone)  # stand-in weights: the file path is what is tested
    heads = tmp_path / "alex_lin.pth"
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}, heads)
    model, status = im.load_lpips(backbone, heads)
    assert status == "available" and model is not None
    a = torch.stack([_smooth_image(7, 64), _smooth_image(8, 64)])
    b = a.flip(-1)
    assert torch.allclose(model(a, a), torch.zeros(2), atol=1e-6)
    d = model(a, b)
    assert d.shape == (2,) and (d > 0).all()
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, heads)  # heads 1..4 missing
    model, status = im.load_lpips(backbone, heads)
    assert model is None and "do not load" in status


# ------------------------------------------------------------------ episode bootstrap of per-pair image scores
def test_bootstrap_of_mean_scores_uses_the_token_tables_resamples_and_weights_pairs():
    import pandas as pd

    from rla_pipeline.evaluation.metrics import episode_bootstrap, episode_bootstrap_means

    rng = np.random.default_rng(0)
    eps = np.repeat(["e3", "e1", "e2", "e4", "e5"], [1, 4, 2, 3, 2])  # uneven pairs per episode, unsorted order
    a = rng.random(len(eps))
    b = a - 0.1 + 0.02 * rng.standard_normal(len(eps))
    vals = pd.DataFrame({"episode_id": eps, "a": a, "b": b, "c": np.nan})
    out = episode_bootstrap_means(vals, ["a", "b", "c"], reference="a", n_boot=400, seed=3)
    assert out["a"]["mean"] == pytest.approx(a.mean()) and out["b"]["mean"] == pytest.approx(b.mean())  # per pair
    assert out["a"]["ci_low"] < a.mean() < out["a"]["ci_high"]
    assert out["b"]["ref_minus"] == pytest.approx(a.mean() - b.mean())
    assert 0 < out["b"]["ref_minus_ci_low"] < out["b"]["ref_minus_ci_high"]  # a is better on every resample
    assert "ref_minus" not in out["a"] and math.isnan(out["c"]["ci_low"]) and math.isnan(out["c"]["mean"])
    # a mean over pairs is a ratio to copy with copy = 1 per pair: the token table's bootstrap on the same episodes
    # and seed must give the very same interval (same resamples)
    token = episode_bootstrap(vals.assign(copy=1.0), ["a"], None, n_boot=400, seed=3)["a"]
    assert (token["vs_copy_ci_low"], token["vs_copy_ci_high"]) == pytest.approx((out["a"]["ci_low"], out["a"]["ci_high"]))
    # constant per-pair scores: no spread
    flat = episode_bootstrap_means(vals.assign(a=0.5), ["a"], n_boot=50, seed=0)["a"]
    assert flat["ci_low"] == pytest.approx(0.5) and flat["ci_high"] == pytest.approx(0.5)


def test_bootstrap_of_mean_scores_over_one_episode_has_no_interval():
    """One episode: the resamples cannot vary, so no interval (NaN), not the old zero-width [mean, mean]."""
    import pandas as pd

    from rla_pipeline.evaluation.metrics import episode_bootstrap_means

    vals = pd.DataFrame({"episode_id": ["e"] * 4, "a": [0.99, 1.0, 0.995, 1.0], "b": [0.5, 0.6, 0.7, 0.8]})
    out = episode_bootstrap_means(vals, ["a", "b"], reference="a", n_boot=100, seed=0)
    assert out["a"]["mean"] == pytest.approx(0.99625) and out["b"]["ref_minus"] == pytest.approx(0.99625 - 0.65)
    for c, keys in (("a", ("ci_low", "ci_high")),
                    ("b", ("ci_low", "ci_high", "ref_minus_ci_low", "ref_minus_ci_high"))):
        assert all(math.isnan(out[c][k]) for k in keys)
