"""Kedro project settings: config loader, hooks."""
import os

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

from kedro.config import OmegaConfigLoader  # noqa: E402
from omegaconf.resolvers import oc  # noqa: E402

from rla_pipeline.hooks import MlflowRunHook, SeedHook  # noqa: E402

HOOKS = (SeedHook(), MlflowRunHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `--params rla.max_steps=10` changes one key, not the whole `rla` block; envs overlay base key by key.
    "merge_strategy": {"parameters": "soft"},
    # `${oc.env:RLA_DATA_ROOT, data}` in globals.yml: move all data with one environment variable.
    "custom_resolvers": {"oc.env": oc.env},
}
