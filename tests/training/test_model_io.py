"""Model registry and TorchModelDataset: one safetensors file round-trips a registered model exactly."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
from kedro.io import DatasetError
from safetensors import safe_open

from rla_pipeline.datasets.torch_model import TorchModelDataset
from rla_pipeline.models.registry import ModelRegistryError, build_model, register_model, registered_models
from rla_pipeline.utils.config import ConfigError


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


def test_registry_builds_from_dict_and_rejects_bad_input():
    assert "test_tied_lm" in registered_models()
    model = build_model("test_tied_lm", {"vocab": 5, "width": 4})
    assert isinstance(model, TiedLM) and model.config == TiedConfig(vocab=5, width=4)
    with pytest.raises(ConfigError, match="depth"):
        build_model("test_tied_lm", {"depth": 3})
    with pytest.raises(ModelRegistryError, match="no model registered as 'nope'"):
        build_model("nope", {})
    with pytest.raises(ModelRegistryError, match="already registered"):
        @register_model("test_tied_lm")
        class Other(TiedLM):
            pass
    with pytest.raises(ModelRegistryError, match="config dataclass"):
        @register_model
        class NoConfig(nn.Module):
            def __init__(self, width: int):
                super().__init__()


def test_torch_model_dataset_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TiedLM(TiedConfig(vocab=13, width=6, scale=0.5))
    with torch.no_grad():
        model.scale.add_(1.0)  # a buffer that differs from its init value must survive
    ds = TorchModelDataset(str(tmp_path / "models" / "tied.safetensors"))
    assert not ds.exists()
    ds.save(model)
    assert ds.exists() and ds._describe() == {"filepath": str(tmp_path / "models" / "tied.safetensors")}
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tied.safetensors"]  # no temp files left
    with safe_open(str(ds.path), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    assert meta["class"] == "test_tied_lm"
    assert json.loads(meta["config"]) == {"vocab": 13, "width": 6, "scale": 0.5}
    assert len(keys) == len(model.state_dict()) - 1  # the tied weight is stored once

    loaded = ds.load()
    assert isinstance(loaded, TiedLM) and not loaded.training
    assert loaded.head.weight is loaded.embed.weight  # tying is rebuilt by the class
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    ids = torch.randint(0, 13, (2, 5))
    assert torch.equal(loaded(ids), model.eval()(ids))


def test_torch_model_dataset_refuses_unregistered_models_and_wrong_files(tmp_path):
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = TiedConfig()
            self.lin = nn.Linear(2, 2)

    ds = TorchModelDataset(str(tmp_path / "m.safetensors"))
    with pytest.raises(Exception, match="not registered"):
        ds.save(Plain())
    with pytest.raises(DatasetError, match="does not exist"):
        ds.load()
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(DatasetError, match="not an rla-pipeline model file"):
        ds.load()
