"""Content digests used as cache, recipe and checkpoint keys: one helper per kind of content.

- :func:`sha256_file`: a file's bytes, streamed.
- :func:`json_digest`: a JSON-able object (settings, recipes, cache-key parts), independent of dict order.
- :func:`nested_digest`: nested dicts/lists of arrays, tensors and scalars (dataset fingerprints, trainer buffers).
- :func:`state_dict_digest`: a module's weights exactly as stored (names, dtypes, shapes, raw bytes).
- :func:`canonical`: an object's settings (a loss function's partial keywords, a loss object's attributes).
- :func:`source_digests`: the project source files a module imports, transitively (its syntax tree, per file).

Each digest is part of a stored key (feature-cache entries, checkpoint config hashes): changing what one
hashes invalidates what was stored under it, so they are kept byte-for-byte stable.
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import hashlib
import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np


def sha256_file(path: str | os.PathLike, h=None, block: int = 1 << 22) -> str:
    """Stream a file into ``h`` (a new sha256 when None) and return its hex digest."""
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def json_digest(obj: Any, length: int | None = None, default=None) -> str:
    """sha256 hex digest of ``json.dumps(obj, sort_keys=True, default=default)``, cut to ``length`` hex chars.

    Exactly ``hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:length]``:
    json's default separators (``", "``, ``": "``) and ``ensure_ascii``, utf-8 bytes; ``length=None`` keeps all
    64 chars; ``default=None`` raises on objects json cannot write (pass ``default=str`` to write their ``str``).
    Episode recipes, feature-cache keys and checkpoint hashes are stored under these strings: keep it stable.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:length]


def _feed(h, x: Any) -> None:
    import torch  # here, not at the top: episode and file hashing should not pay for importing torch

    if x is None:
        h.update(b"none")
    elif isinstance(x, dict):
        for k in sorted(x):
            h.update(str(k).encode())
            _feed(h, x[k])
    elif isinstance(x, (list, tuple)):
        for v in x:
            _feed(h, v)
    elif isinstance(x, torch.Tensor):  # as float32 values: the same numbers in another dtype hash alike
        h.update(x.detach().float().cpu().contiguous().numpy().tobytes())
    elif isinstance(x, np.ndarray):
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        h.update(repr(x).encode())


def nested_digest(*groups: Any) -> str:
    """sha256 (16 hex) over every array in ``groups`` (nested lists/dicts of arrays, tensors or scalars, in order)."""
    h = hashlib.sha256()
    for g in groups:
        _feed(h, g)
    return h.hexdigest()[:16]


def state_dict_digest(model) -> str:
    """sha256 over ``model``'s parameters and buffers (names, dtypes, shapes, bytes), in name order."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------------ settings of an object
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a class or function (never a repr with a memory address)."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def canonical(x: Any, _seen: frozenset = frozenset(), _depth: int = 0) -> Any:
    """A JSON-able description of ``x``'s *settings*, the same in every process (no ``id()``, no addresses).

    Used for the trainer's checkpoint key: a ``functools.partial`` gives its function, args and keywords; a
    function its qualified name, defaults and closure values; a bound method its object; a dataclass or plain
    object its class and attributes; an ``nn.Module`` its class, attributes, parameter shapes and a digest of its
    fixed values (buffers, frozen parameters); arrays
    and tensors a digest of their values. What a function's *code* does is covered by the source digest
    (:func:`source_digests`), not here.
    """
    import torch

    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if _depth > 8 or id(x) in _seen:  # deep or cyclic object graphs: name the class, do not recurse forever
        return {"class": qualified_name(type(x)), "cut": True}
    seen = _seen | {id(x)}

    def rec(v):
        return canonical(v, seen, _depth + 1)

    if isinstance(x, enum.Enum):
        return {"enum": qualified_name(type(x)), "value": rec(x.value)}
    if isinstance(x, (list, tuple)):
        return [rec(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted((rec(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(x, dict):
        return {str(k): rec(v) for k, v in x.items()}
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return {"array": nested_digest(x), "shape": list(x.shape), "dtype": str(x.dtype)}
    if isinstance(x, (bytes, bytearray)):
        return {"bytes": hashlib.sha256(bytes(x)).hexdigest()[:16]}
    if isinstance(x, type):
        return {"type": qualified_name(x)}
    if isinstance(x, functools.partial):
        return {"partial": rec(x.func), "args": rec(list(x.args)), "keywords": rec(dict(x.keywords))}
    if isinstance(x, types.MethodType):
        return {"method": qualified_name(x.__func__), "self": rec(x.__self__)}
    if isinstance(x, types.FunctionType):
        closure = [c.cell_contents for c in (x.__closure__ or ()) if _cell_filled(c)]
        return {"function": qualified_name(x), "defaults": rec(list(x.__defaults__ or ())),
                "kwdefaults": rec(dict(x.__kwdefaults__ or {})),
                "closure": rec(dict(zip(x.__code__.co_freevars, closure)))}
    if isinstance(x, (types.BuiltinFunctionType, types.ModuleType)):
        return {"builtin": getattr(x, "__qualname__", getattr(x, "__name__", "?")),
                "module": getattr(x, "__module__", None)}
    if isinstance(x, torch.nn.Module):
        attrs = {k: v for k, v in vars(x).items() if not k.startswith("_") and k != "training"}
        # Fixed values only (buffers, frozen parameters, e.g. a frozen RLA giving targets): trainable weights are
        # what training changes, and a resumed run restores them from the checkpoint.
        fixed = {n: t for n, t in x.named_buffers()}
        fixed.update({n: p for n, p in x.named_parameters() if not p.requires_grad})
        shapes = [[n, list(p.shape)] for n, p in x.named_parameters()]
        return {"class": qualified_name(type(x)), "attrs": rec(attrs), "fixed": nested_digest(fixed),
                "parameters": shapes}
    if dataclasses.is_dataclass(x):
        return {"class": qualified_name(type(x)),
                "fields": {f.name: rec(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if hasattr(x, "__dict__") or hasattr(x, "__slots__"):
        attrs = dict(vars(x)) if hasattr(x, "__dict__") else {}
        for name in getattr(type(x), "__slots__", ()):
            if hasattr(x, name):
                attrs[name] = getattr(x, name)
        if attrs or callable(x):
            return {"class": qualified_name(type(x)), "attrs": rec(attrs)}
    return {"class": qualified_name(type(x)), "repr": _ADDRESS.sub("", repr(x))}


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell (a name assigned after the closure was made)
        return False
    return True


# ------------------------------------------------------------------------------------------- source code
PROJECT_PACKAGE = "rla_pipeline"


def _module_file(name: str) -> Path | None:
    """The ``.py`` file of module ``name`` without importing it (None: not a source module).

    Project modules are found under the package folder (no import: finding a spec imports parent packages,
    seconds here); others only when already imported (the model or loss of a caller outside the project).
    """
    parts = name.split(".")
    if parts[0] == PROJECT_PACKAGE:
        base = Path(__file__).resolve().parents[1].joinpath(*parts[1:])
        for cand in (base / "__init__.py", base.with_suffix(".py")):
            if cand.is_file():
                return cand
        return None
    mod = sys.modules.get(name)
    origin = getattr(mod, "__file__", None)
    if not origin or not origin.endswith(".py"):
        return None
    path = Path(origin)
    # Installed libraries and the standard library are versions, not this project's code: not digested.
    if {"site-packages", "dist-packages"} & set(path.parts) or _under(path, sys.base_prefix, sys.prefix):
        return None
    return path


def _under(path: Path, *roots: str) -> bool:
    return any(str(path).startswith(str(Path(r)) + os.sep) for r in roots)


def _imports_of(name: str, path: Path) -> set[str]:
    """Modules of the project that ``name`` (file ``path``) imports anywhere in its body (lazy imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk_skipping_main(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    out = set()
    for mod in found:
        if mod == PROJECT_PACKAGE or mod.startswith(PROJECT_PACKAGE + "."):
            if _module_file(mod) is not None:
                out.add(mod)
    return out


def _walk_skipping_main(tree: ast.AST):
    """``ast.walk`` without the body of ``if __name__ == "__main__":`` (a script entry point is not an import of
    the module's users)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_main_guard(node.test):
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _is_main_guard(test: ast.AST) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


@functools.lru_cache(maxsize=256)
def _closure(roots: tuple[str, ...]) -> tuple[str, ...]:
    todo, done = list(roots), set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        path = _module_file(name)
        if path is None:
            continue
        done.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a/ and a/b/__init__
        if name.split(".")[0] == PROJECT_PACKAGE:
            todo.extend(_imports_of(name, path) - done)
    return tuple(sorted(done))


def module_closure(*modules: str) -> list[str]:
    """``modules`` and every project module they import, transitively (module names, sorted).

    Imports are read from the source (``ast``), top-level and inside functions alike; only modules of the
    ``rla_pipeline`` package are followed. A module outside it is kept itself (e.g. a test's model file) but
    not followed. Used for the trainer's source digest and for checking ``dvc.yaml``'s deps.
    """
    return list(_closure(tuple(sorted(set(modules)))))


def source_label(name: str, path: Path) -> str:
    """How a source file is named in keys and logs: ``rla_pipeline/models/rla.py`` for project files (relative,
    so two clones in other folders agree), ``<module>.py`` for others."""
    if name.split(".")[0] == PROJECT_PACKAGE:
        return "/".join(name.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
    return f"{name}.py"


def source_digest_of_file(path: Path) -> str:
    """sha256 (16 hex) of a Python file's syntax tree: comments and formatting do not count, code does."""
    text = path.read_text(encoding="utf-8")
    try:
        blob = ast.dump(ast.parse(text), include_attributes=False)
    except SyntaxError:
        blob = text
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def source_digests(*modules: str) -> dict[str, str]:
    """``{file label: digest}`` over :func:`module_closure` of ``modules`` (see :func:`source_label`)."""
    out = {}
    for name in module_closure(*modules):
        path = _module_file(name)
        if path is not None:
            out[source_label(name, path)] = source_digest_of_file(path)
    return out
