"""Registry of model classes, so a saved model can be rebuilt from (class name, config dict) alone.

A registered class is an ``nn.Module`` whose ``__init__`` takes one config dataclass and keeps it as
``self.config``. The config class is found, in order, from the class attribute ``config_class``, the
class annotation of ``config``, or the type hint of the first ``__init__`` parameter.

```python
@register_model                 # registered as "MyNet"
class MyNet(nn.Module):
    config_class = MyNetConfig
    def __init__(self, config: MyNetConfig): ...

@register_model("my_net")       # or under an explicit name
...
model = build_model("MyNet", {"width": 64})     # MyNet(from_dict(MyNetConfig, {"width": 64}))
```
Torch only: no Kedro here (``rla_pipeline.datasets.torch_model`` is the Kedro side).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from typing import Any, Callable, TypeVar, overload

from rla_pipeline.utils.config import from_dict

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type] = {}


class ModelRegistryError(KeyError):
    """Unknown model name, a name taken by another class, or a class without a config dataclass."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


def config_class_of(cls: type) -> type:
    """The config dataclass that ``cls.__init__`` takes (see the module docstring for the lookup order)."""
    explicit = getattr(cls, "config_class", None)
    if explicit is not None:
        if not dataclasses.is_dataclass(explicit):
            raise ModelRegistryError(f"{cls.__name__}.config_class = {explicit!r} is not a dataclass")
        return explicit
    for hints_of in (cls, cls.__init__):
        try:
            hints = typing.get_type_hints(hints_of)
        except Exception:  # unresolvable forward references: try the next source
            continue
        if hints_of is cls:
            candidate = hints.get("config")
        else:
            params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
            candidate = hints.get(params[0]) if params else None
        if candidate is not None and dataclasses.is_dataclass(candidate):
            return candidate
    raise ModelRegistryError(
        f"cannot find the config dataclass of {cls.__name__}: set `config_class = <YourConfig>` on the class"
    )


@overload
def register_model(name: T) -> T: ...
@overload
def register_model(name: str | None = None) -> Callable[[T], T]: ...
def register_model(name=None):
    """Class decorator: ``@register_model``, ``@register_model()`` or ``@register_model("name")``.

    The default name is the class name. Registering a different class under a taken name raises;
    re-registering the same class (same module and qualname, e.g. after a module reload) replaces it.
    """
    if isinstance(name, type):  # bare @register_model
        return register_model(None)(name)

    def decorator(cls: T) -> T:
        key = name or cls.__name__
        config_class_of(cls)  # fail at import time, not at load time
        old = _REGISTRY.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ModelRegistryError(
                f"model name {key!r} is already registered by {old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[key] = cls
        cls._registered_name = key
        return cls

    return decorator


def registered_models() -> list[str]:
    """Sorted names of every registered model class (of the modules imported so far)."""
    return sorted(_REGISTRY)


def get_model_class(name: str, module: str | None = None) -> type:
    """The class registered as ``name``; imports ``module`` first when given and the name is unknown."""
    if name not in _REGISTRY and module:
        importlib.import_module(module)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelRegistryError(
            f"no model registered as {name!r}"
            + (f" (after importing {module})" if module else "")
            + f"; registered: {registered_models()}"
        ) from None


def model_name(model: Any) -> str:
    """Registered name of ``model``'s class; raises when the class was never registered."""
    cls = type(model)
    name = getattr(cls, "_registered_name", None)
    if name is None or _REGISTRY.get(name) is not cls:
        raise ModelRegistryError(
            f"{cls.__module__}.{cls.__qualname__} is not registered: decorate it with @register_model"
        )
    return name


def build_model(name: str, config: dict[str, Any] | Any, module: str | None = None):
    """Build the model registered as ``name`` from a config dict (or a ready config dataclass)."""
    cls = get_model_class(name, module)
    cfg_cls = config_class_of(cls)
    if not dataclasses.is_dataclass(config):
        config = from_dict(cfg_cls, config, where=name)
    return cls(config)
