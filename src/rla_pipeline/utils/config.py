"""Helpers for typed, documented config dataclasses built from Kedro parameter dicts.

Every stage reads its parameter block into a dataclass with :func:`from_dict`: an unknown key anywhere in the
block (nested blocks included) raises :class:`ConfigError` naming the key, the block (``rla.trainer``) and the
parameters file it comes from, before any work starts.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter block does not fit its config dataclass (unknown key, wrong value)."""


# Top-level parameter blocks, each in conf/<env>/parameters_<block>.yml.
PARAMETER_BLOCKS = ("actionless_bc", "evaluation", "features", "ingestion", "report", "rl", "rla", "tune",
                    "world_model")


def _where(where: str) -> str:
    """``rla.trainer`` -> `` in rla.trainer (conf/<env>/parameters_rla.yml)``: say which file to fix."""
    if not where:
        return ""
    top = where.split(".")[0]
    if top not in PARAMETER_BLOCKS:  # a class name or a sub-block built on its own: no file to name
        return f" in {where}"
    return f" in {where} (conf/<env>/parameters_{top}.yml)"


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass of a field hint ``C`` or ``C | None``; None for anything else."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        classes = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return classes[0] if len(classes) == 1 else None
    return None


def check_keys(cls: type, data: dict[str, Any] | None, *, where: str = "") -> dict[str, Any]:
    """``data`` unchanged when every key is a field of dataclass ``cls``; else ``ConfigError`` naming the keys.

    For blocks that hold part of a lower floor's config whose other fields come from the data (a trainer's
    ``run_name``, an env's calibrated threshold): the block stays a dict, but a typo still fails at once.
    """
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}{_where(where)}; known: {sorted(known)}")
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ``ConfigError`` naming them and the block.

    Nested dataclass fields (``C`` or ``C | None``) are built recursively from nested dicts.
    """
    data = check_keys(cls, data, where=where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_of(hints.get(name))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, where=f"{where}.{name}" if where else name)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
