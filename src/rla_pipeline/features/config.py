"""The ``features`` parameter block: encoder + cache settings (``conf/*/parameters_features.yml``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rla_pipeline.features.cache import FeatureCacheConfig
from rla_pipeline.features.encoder import EncoderConfig
from rla_pipeline.utils.config import from_dict


@dataclass
class FeaturesConfig:
    """encoder: which DINO, which weights, image size, masking (EncoderConfig).
    cache: camera, verification, decode prefetch, progress (FeatureCacheConfig).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cache: FeatureCacheConfig = field(default_factory=FeatureCacheConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FeaturesConfig":
        return from_dict(cls, d, where="features")

    def with_device(self, device: str) -> "FeaturesConfig":
        """Apply the global ``device`` unless the encoder names its own (anything but "auto")."""
        if self.encoder.device != "auto":
            return self
        return dataclasses.replace(self, encoder=dataclasses.replace(self.encoder, device=device))
