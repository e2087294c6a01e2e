"""Regenerate the golden model files of ``tests/models/test_save_load.py``: one tiny saved model per registered class.

    .venv/bin/python scripts/make_golden_weights.py            # rewrites tests/models/golden/<name>.safetensors

The test loads these files with today's code, so a change that breaks loading models saved earlier (a renamed
parameter, a config field dropped or retyped) fails it. Regenerate them only for a deliberate format break, and
say so in the commit. Every model registered under ``rla_pipeline.models`` needs an entry in ``TINY_CONFIGS``.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = ROOT / "tests" / "models" / "golden"

_TINY_RLA = {"num_tokens": 4, "token_dim": 8, "width": 8, "enc_depth": 1, "dec_depth": 1, "heads": 2, "mlp_ratio": 1.0,
             "latent_tokens": 2, "latent_dim": 2}
_TINY_WM = {"num_tokens": 4, "token_dim": 8, "action_dim": 2, "max_actions": 3, "width": 8, "cond_depth": 1,
            "flow_depth": 1, "depth": 1, "heads": 2, "mlp_ratio": 1.0, "action_embed_dim": 4, "sample_steps": 2}
# Small enough for a few KB per file; BCResNetPolicy uses timm's smallest ResNet (``test_resnet``, about 1.5 MB).
TINY_CONFIGS: dict[str, dict] = {
    "ResidualLatentActionAutoencoder": _TINY_RLA,
    "RLAWorldModel": {**_TINY_WM, "rla": _TINY_RLA},
    "DeterministicWorldModel": _TINY_WM,
    "AbsoluteFlowWorldModel": _TINY_WM,
    "BCResNetPolicy": {"backbone": "test_resnet", "image_size": 16, "action_dim": 2, "chunk": 2, "proprio_dim": 3,
                       "num_tasks": 2, "task_names": ["PushCube-v1", "PickCube-v1"], "hidden": 8,
                       "latent_tokens": 2, "latent_dim": 2},
    "TokenPolicy": {"num_tokens": 4, "token_dim": 8, "action_dim": 2, "chunk": 2, "proprio_dim": 3, "num_tasks": 2,
                    "task_names": ["PushCube-v1", "PickCube-v1"], "token_proj": 2, "hidden": 8},
    "PixelDecoder": {"num_tokens": 4, "token_dim": 8, "image_size": 8, "channels": [4, 4], "blocks_per_level": 1,
                     "groups": 2},
}


def project_models() -> list[str]:
    """Names of the model classes registered by the modules of ``rla_pipeline.models`` (all imported here)."""
    import rla_pipeline.models as pkg
    from rla_pipeline.models.registry import get_model_class, registered_models

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")
    return [n for n in registered_models() if get_model_class(n).__module__.startswith(pkg.__name__ + ".")]


def golden_model(name: str) -> torch.nn.Module:
    """The tiny model of ``name`` with seeded weights and every buffer moved off its initial value."""
    from rla_pipeline.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(name, TINY_CONFIGS[name])
    with torch.no_grad():
        for i, (_, buf) in enumerate(sorted(model.named_buffers())):
            if buf.is_floating_point():
                buf.add_(0.25 + 0.01 * i)  # statistics set from data must survive a save/load too
    return model.eval()


def main() -> int:
    from rla_pipeline.training.model_io import save_model

    names = project_models()
    missing = sorted(set(names) - set(TINY_CONFIGS))
    if missing:
        print(f"no tiny config for {missing}: add them to TINY_CONFIGS", file=sys.stderr)
        return 1
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for old in GOLDEN_DIR.glob("*.safetensors"):
        if old.stem not in names:
            old.unlink()
    for name in names:
        path = save_model(golden_model(name), GOLDEN_DIR / f"{name}.safetensors")
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1024:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
