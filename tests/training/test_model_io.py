"""``training.model_io``: what the per-model sweep (tests/models/test_save_load.py) does not cover.

Tied weights (a shared tensor stored once, tying rebuilt on load) and the refusals of unusable input.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from rla_pipeline.models.registry import register_model
from rla_pipeline.training.model_io import ModelFileError, load_model, save_model


@dataclass
class TiedConfig:
    vocab: int = 11
    width: int = 8
    scale: float = 2.0


@register_model("test_tied_lm")
class TiedLM(nn.Module):
    """Embedding tied to the output head (a shared tensor) and a buffer; (B, T) ids -> (B, T, vocab)."""

    def __init__(self, config: TiedConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.width)
        self.mix = nn.Linear(config.width, config.width)
        self.head = nn.Linear(config.width, config.vocab, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.full((config.width,), config.scale))

    def forward(self, ids):
        return self.head(torch.tanh(self.mix(self.embed(ids) * self.scale)))


def test_tied_weights_are_stored_once_and_tied_again_on_load(tmp_path):
    torch.manual_seed(0)
    model = TiedLM(TiedConfig(vocab=13, width=6, scale=0.5))
    with torch.no_grad():
        model.scale.add_(1.0)  # a buffer that differs from its init value must survive
    path = save_model(model, tmp_path / "tied.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    assert meta["class"] == "test_tied_lm"
    assert json.loads(meta["config"]) == {"vocab": 13, "width": 6, "scale": 0.5}
    assert len(keys) == len(model.state_dict()) - 1  # the tied weight is stored once

    loaded = load_model(path)
    assert isinstance(loaded, TiedLM) and not loaded.training
    assert loaded.head.weight is loaded.embed.weight  # tying is rebuilt by the class
    ids = torch.randint(0, 13, (2, 5))
    assert torch.equal(loaded(ids), model.eval()(ids))


def test_unregistered_models_missing_and_foreign_files_are_refused(tmp_path):
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = TiedConfig()
            self.lin = nn.Linear(2, 2)

    path = tmp_path / "m.safetensors"
    with pytest.raises(Exception, match="not registered"):
        save_model(Plain(), path)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(path)
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(ModelFileError, match="not an rla-pipeline model file"):
        load_model(path)
    save_model(TiedLM(TiedConfig(vocab=5)), path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()  # says vocab=5
    wider = TiedLM(TiedConfig(vocab=7))
    save_file({k: v.contiguous() for k, v in wider.state_dict().items() if k != "head.weight"}, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="do not fit"):  # weights of another shape than the config says
        load_model(path)


SAVE_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_model_io import TiedConfig, TiedLM
from rla_pipeline.training.model_io import save_model
torch.manual_seed(0)
save_model(TiedLM(TiedConfig()), sys.argv[1])
"""


def test_the_same_weights_saved_twice_give_identical_bytes(tmp_path):
    """safetensors writes its metadata from a Rust HashMap whose order changes per process: the header is sorted."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    paths = [tmp_path / f"m{i}.safetensors" for i in range(3)]
    for p in paths:  # separate processes: another hash seed each time
        res = subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(p), here], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stderr[-2000:]
    torch.manual_seed(0)
    save_model(TiedLM(TiedConfig()), tmp_path / "here.safetensors")
    blobs = {p.read_bytes() for p in [*paths, tmp_path / "here.safetensors"]}
    assert len(blobs) == 1
    loaded = load_model(paths[0])  # still a valid file that loads with its tying
    assert loaded.head.weight is loaded.embed.weight
