"""Model registry: a class is rebuilt from (registered name, config dict) alone, and bad input is refused."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch.nn as nn

from rla_pipeline.models.registry import ModelRegistryError, build_model, register_model, registered_models
from rla_pipeline.utils.config import ConfigError


@dataclass
class TinyConfig:
    vocab: int = 11
    width: int = 8


@register_model("test_registry_net")
class TinyNet(nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.width)


def test_registry_builds_from_dict_and_rejects_bad_input():
    assert "test_registry_net" in registered_models()
    model = build_model("test_registry_net", {"vocab": 5, "width": 4})
    assert isinstance(model, TinyNet) and model.config == TinyConfig(vocab=5, width=4)
    with pytest.raises(ConfigError, match="depth"):
        build_model("test_registry_net", {"depth": 3})
    with pytest.raises(ModelRegistryError, match="no model registered as 'nope'"):
        build_model("nope", {})
    with pytest.raises(ModelRegistryError, match="already registered"):
        @register_model("test_registry_net")
        class Other(TinyNet):
            pass
    with pytest.raises(ModelRegistryError, match="config dataclass"):
        @register_model
        class NoConfig(nn.Module):
            def __init__(self, width: int):
                super().__init__()
