"""The HTML report: sections, random-init banner, embedded images, self-containment, and how chromium renders it."""
from __future__ import annotations

import base64
import math
import io
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from rla_pipeline.evaluation.report import RANDOM_INIT_TAG, ReportConfig, build_report, provenance_from
from rla_pipeline.evaluation.success import PAPER_TABLE2, PAPER_TABLE3, comparison_table


def _episodes(policies, rates, tasks=("PushCube-v1", "PokeCube-v1"), n=10):
    rows = []
    for pol, rate in zip(policies, rates):
        for task in tasks:
            for i in range(n):
                rows.append({"policy": pol, "task": task, "seed": i, "success": i < rate * n})
    return pd.DataFrame(rows)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    h = np.array([5, 15, 30])
    ax.plot(h, 0.1 * h ** 0.5, "o-", label="rla_wm")
    ax.plot(h, 0.15 * h ** 0.5, "s-", label="deterministic")
    ax.legend()
    return fig


def _inputs(weights_tag=RANDOM_INIT_TAG, tuned=True):
    bc = comparison_table(_episodes(["bc", "bc_rla"], [0.3, 0.6]), "bc", "bc_rla", PAPER_TABLE2, ("BC-ResNet", "+RLA"))
    wmrl = comparison_table(_episodes(["bc", "wmrl"], [0.4, 0.5]), "bc", "wmrl", PAPER_TABLE3, ("BC-ResNet", "WMRL"))
    pred = pd.DataFrame({"model": ["rla_wm", "deterministic", "absolute_flow"] * 3,
                         "horizon": [5] * 3 + [15] * 3 + [30] * 3, "token_l1": np.linspace(0.1, 0.5, 9)})
    pictures = {"PushCube-v1 h=15": (np.random.default_rng(0).random((32, 96, 3)) * 255).astype(np.uint8)}
    rla_metrics = pd.DataFrame({"split": ["val"], "rla_l1": [0.21], "copy_l1": [0.55]})
    gen = pd.DataFrame({"task": ["PokeCube-v1"], "rla_l1": [0.3], "copy_l1": [0.6]})
    temporal = pd.DataFrame({"h": [2, 8, 15], "rla_l1": [0.1, 0.2, 0.3], "copy_l1": [0.2, 0.5, 0.8]})
    manifest = pd.DataFrame({"episode_id": ["a", "b"], "encoder": ["vit_small_patch14_dinov2.lvd142m"] * 2,
                             "weights_tag": [weights_tag] * 2})
    tuned_shape = {
        "latent_tokens": 8, "latent_dim": 8, "lr": 1e-3, "best_value": 0.123, "metric": "val_l1", "best_trial": 1,
        "study_name": "s", "storage": "sqlite:///x.db", "n_complete": 2, "n_pruned": 1,
        "trials": [
            {"number": 0, "state": "COMPLETE", "shape": "4x8", "latent_size": 32, "lr": 1e-3, "value": 0.2},
            {"number": 1, "state": "COMPLETE", "shape": "8x8", "latent_size": 64, "lr": 1e-3, "value": 0.123},
            {"number": 2, "state": "PRUNED", "shape": "16x16", "latent_size": 256, "lr": 3e-3, "value": 0.4},
        ],
    } if tuned else None
    return dict(
        provenance=provenance_from(manifest, {"git.commit": "abc123", "git.dirty": "true",
                                              "dvc.data/01_raw/episodes": "d41d8cd9"}, "run-42"),
        bc_success_table=bc, wmrl_success_table=wmrl, wm_prediction_table=pred, wm_prediction_plot=_figure(),
        wm_feature_pictures=pictures, rla_metrics=rla_metrics, rla_generalisation=gen,
        rla_temporal_progression=temporal, tuned_shape=tuned_shape,
        ingestion_summary=pd.DataFrame({"task": ["PushCube-v1"], "episodes": [4]}),
    )


def test_report_has_every_section_provenance_and_random_init_banner(tmp_path):
    page = build_report(**_inputs(), config=ReportConfig(title="T"))
    for anchor in ("success-bc", "success-wmrl", "prediction", "rla-checks", "tuning", "data"):
        assert f'<section id="{anchor}">' in page
    assert 'id="random-init-banner"' in page and "RANDOM-INIT ENCODER" in page
    assert "abc123" in page and "uncommitted" in page and "run-42" in page and "d41d8cd9" in page
    assert "vit_small_patch14_dinov2.lvd142m" in page
    # paper numbers beside ours (as the success tables carry them)
    assert "27.200" in page and "95.900" in page and "paper (reference" in page
    assert "Best shape: <strong>8 x 8</strong>" in page
    # self-contained: every image is inline base64 PNG that decodes, nothing is fetched
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 3  # prediction plot, feature picture, tuning trade-off
    for b in imgs:
        assert base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:|//|/)', page)


def test_pretrained_report_has_no_banner_and_untuned_says_not_run():
    page = build_report(**_inputs(weights_tag="pretrained", tuned=False))
    assert "random-init-banner" not in page
    assert 'id="tuning-not-run"' in page and "not run" in page
    assert page.count("data:image/png;base64,") == 2


def test_random_init_anywhere_in_the_manifest_wins():
    manifest = pd.DataFrame({"encoder": ["e", "e"], "weights_tag": ["pretrained", RANDOM_INIT_TAG]})
    assert provenance_from(manifest, {}, None).weights_tag == RANDOM_INIT_TAG


def test_missing_sections_say_so():
    page = build_report(provenance=provenance_from(None, None, None))
    assert page.count('class="missing"') >= 8
    assert "Encoder weights unknown" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (scripts/setup_chromium.sh)")
def test_report_renders_in_headless_chromium(tmp_path):
    page = build_report(**_inputs())
    html_path = tmp_path / "report.html"
    html_path.write_text(page, encoding="utf-8")
    png = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--virtual-time-budget=5000", f"--screenshot={png}", "--window-size=1200,1600", html_path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB")).astype(np.float32)
    assert img.shape == (1600, 1200, 3)
    assert img.std() > 10  # not blank
    # the red random-init banner is rendered near the top
    top = img[:400]
    red = (top[..., 0] > 150) & (top[..., 1] < 80) & (top[..., 2] < 80)
    assert red.sum() > 5000
    import os

    if os.environ.get("RLA_KEEP_SCREENSHOTS"):
        shutil.copy(png, os.environ["RLA_KEEP_SCREENSHOTS"])


def _decoded_table():
    """A wm_decoded_table as stages.world_model_images writes it (two horizons, LPIPS not computed)."""
    rows = []
    for h in (5, 15):
        for i, (model, name) in enumerate([("rla_wm", "RLA-WM"), ("deterministic", "deterministic (direct s_t+h)"),
                                           ("decoded_truth", "decoded truth (decoder ceiling)"),
                                           ("copy", "copy s_t (decoded)")]):
            ssim, psnr = 0.9 - 0.1 * i - 0.01 * h, 30.0 - 2 * i
            rows.append({"robot": "panda", "model": model, "name": name, "horizon": h, "pairs": 12, "episodes": 3,
                         "ssim": ssim, "ssim_ci_low": ssim - 0.02, "ssim_ci_high": ssim + 0.02,
                         "ref_minus_ssim": math.nan if model == "rla_wm" else 0.1 * i,
                         "ref_minus_ssim_ci_low": math.nan if model == "rla_wm" else 0.1 * i - 0.03,
                         "ref_minus_ssim_ci_high": math.nan if model == "rla_wm" else 0.1 * i + 0.03,
                         "psnr": psnr, "psnr_ci_low": psnr - 1, "psnr_ci_high": psnr + 1,
                         "ref_minus_psnr": math.nan if model == "rla_wm" else 2.0 * i,
                         "ref_minus_psnr_ci_low": math.nan if model == "rla_wm" else 2.0 * i - 0.5,
                         "ref_minus_psnr_ci_high": math.nan if model == "rla_wm" else 2.0 * i + 0.5,
                         "lpips": math.nan, "lpips_ci_low": math.nan, "lpips_ci_high": math.nan,
                         "ref_minus_lpips": math.nan, "ref_minus_lpips_ci_low": math.nan,
                         "ref_minus_lpips_ci_high": math.nan, "lpips_status": "unavailable: no local LPIPS weights"})
    return pd.DataFrame(rows)


def test_report_shows_decoded_rollouts_their_scores_and_the_decoder_quality():
    rng = np.random.default_rng(1)
    rollouts = (rng.random((64, 256, 3)) * 255).astype(np.uint8)
    grid = _figure()
    decoder_metrics = pd.DataFrame({"split": ["val", "val"], "method": ["decoder", "mean_image"], "psnr": [24.5, 17.25],
                                    "ssim": [0.71, 0.42]})
    page = build_report(**_inputs(), wm_decoded_table=_decoded_table(), wm_decoded_rollouts=rollouts,
                        pixel_decoder_metrics=decoder_metrics, pixel_decoder_grid=grid)
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 5  # + the decoded rollouts and the decoder's grid
    from PIL import Image

    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in imgs]
    assert any(d.shape[:2] == (64, 256) and np.array_equal(d[..., :3], rollouts) for d in decoded)  # pixels intact
    section = page[page.index('id="decoded-predictions"'):page.index('id="rla-checks"')]
    assert "decoded truth (decoder ceiling)" in section and "RLA-WM - this (ssim)" in section
    # mean [bootstrap interval] cells; PSNR in dB with one decimal; LPIPS column absent when it was not computed
    assert "0.850 [0.830, 0.870]" in section and "30.0 [29.0, 31.0]" in section and ">lpips<" not in section
    assert "24.500" in section and "0.710" in section  # the decoder's own quality table
    assert 'id="pixel-decoder"' in page


def test_decoded_parts_missing_say_so():
    page = build_report(**_inputs())
    section = page[page.index('id="decoded-predictions"'):page.index('id="rla-checks"')]
    assert section.count('class="missing"') == 4
