"""The HTML report: sections, random-init banner, embedded images, self-containment, and how chromium renders it."""
from __future__ import annotations

import base64
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
