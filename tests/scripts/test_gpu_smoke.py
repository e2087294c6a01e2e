"""scripts/gpu_smoke.py in its CPU mode: the same stages as on a GPU (features, every trainer with bf16 autocast,
one imagined PPO iteration, DDP through the trainer's local launcher) at tiny sizes, with gloo instead of NCCL."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["features", "train.rla", "train.rla_wm", "train.deterministic", "train.absolute_flow", "train.bc",
          "train.bc_rla", "train.token_bc", "train.pixel_decoder", "ppo", "ddp"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_smoke_runs_every_stage_on_the_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_smoke.py"), "--device", "cpu", "--tiny",
                           "--steps", "3", "--json", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    rows = {r["stage"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == STAGES
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["detail"] for k, r in rows.items()}
    for name in STAGES:  # every stage timed a real step and saw its process's memory
        assert math.isfinite(rows[name]["step_s"]) and rows[name]["step_s"] > 0, name
        assert rows[name]["memory_mib"] > 0, name
    assert "random-init" in rows["features"]["detail"]  # random encoder weights are labelled as such
    assert "bf16" in rows["train.rla"]["detail"]
    assert "gloo x 2 processes" in rows["ddp"]["detail"]  # rank 0 saw a real 2-process group
    # the printed markdown table
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(STAGES)  # header, separator, one row per stage


def test_gpu_smoke_one_device_ddp_path(tmp_path):
    """What a 1-GPU machine runs for the DDP row (a 1-rank process group + DDP wrapper), here with gloo."""
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_smoke.py"), "--device", "cpu", "--tiny",
                           "--steps", "3", "--ddp-single", "--stages", "ddp", "--json", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    rows = {r["stage"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["features", "ddp"]
    assert rows["ddp"]["status"] == "ok" and "gloo x 1 process group + DDP wrapper" in rows["ddp"]["detail"]
    assert math.isfinite(rows["ddp"]["step_s"]) and rows["ddp"]["step_s"] > 0


def test_paper_sizes_resolve_from_the_paper_env():
    """`make gpu-smoke` (not --tiny) reads the paper env as Kedro does: base soft-merged with conf/paper, which
    holds only differences (reading conf/paper alone lost rl.ppo.gamma and crashed `make gpu-smoke` / `make bench`)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_smoke

    sz = gpu_smoke.sizes(tiny=False, batch_size=None, weights="random")
    assert sz.ppo["gamma"] == 0.9 and sz.ppo["learning_rate"] > 0
    assert sz.rla_model["width"] == 1024 and sz.rla_model["latent_tokens"] == 32 and sz.rla_model["latent_dim"] == 64
    assert sz.rla_model.get("decoder_skip", False) is False  # the paper's decoder
    assert sz.encoder["model_name"].startswith("vit_large_patch16_dinov3") and sz.encoder["image_size"] == 512
