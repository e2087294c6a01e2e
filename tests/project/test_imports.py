"""The floors hold: the library floors never reach Kedro, and the package's import graph has no cycle.

Two checks, each able to fail on its own:
- at import time: each floor's modules imported one by one in a fresh interpreter; the first that puts ``kedro`` in
  ``sys.modules`` is named;
- statically: every ``import`` in the package (function-level ones included, which the import-time check cannot
  see) parsed with ``ast``; from each floor module, the modules it reaches must not import Kedro, and the graph of
  ``rla_pipeline`` subpackages must have no cycle.
Code under ``if __name__ == "__main__":`` is a program's entry, not something importers get, so it is left out.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "rla_pipeline"
FLOORS = ("models", "training", "features", "episodes", "stages")

# Known edges into the Kedro floor, each owned by someone who is removing it. An entry that no longer exists fails
# the test too, so the list only shrinks.
KNOWN_KEDRO_PATHS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), anywhere in the file but under a ``__main__`` guard."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for top in tree.body if _is_main_guard(top) for n in ast.walk(top)}
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """module -> the modules it imports (rla_pipeline ones resolved to files that exist, others as written)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    g = {}
    for name, path in files.items():
        deps = set()
        for imp in _imports(path):
            if imp.startswith("rla_pipeline"):
                if imp in files:
                    deps.add(imp)
            else:
                deps.add(imp)
        g[name] = deps
    return g


def _reach(graph, start: str) -> dict[str, str]:
    """Modules reachable from ``start`` over rla_pipeline edges -> the module that imports each."""
    seen, todo = {start: ""}, [start]
    while todo:
        m = todo.pop()
        for d in graph.get(m, ()):
            if d in graph and d not in seen:
                seen[d] = m
                todo.append(d)
    return seen


def test_no_floor_module_reaches_kedro_even_through_lazy_imports(graph):
    bad, used = [], set()
    for start in sorted(m for m in graph if m.split(".")[1:2] and m.split(".")[1] in FLOORS):
        via = _reach(graph, start)
        for m in via:
            if any(d == "kedro" or d.startswith("kedro.") for d in graph[m]):
                chain = [m]
                while via[chain[-1]]:
                    chain.append(via[chain[-1]])
                chain.reverse()
                edge = next(((a, b) for a, b in zip(chain, chain[1:]) if (a, b) in KNOWN_KEDRO_PATHS), None)
                if edge:
                    used.add(edge)
                else:
                    bad.append(" -> ".join(chain) + " -> kedro")
    assert not bad, "a library floor reaches Kedro:\n" + "\n".join(sorted(set(bad)))
    assert used == KNOWN_KEDRO_PATHS, f"remove the fixed entries {KNOWN_KEDRO_PATHS - used} from KNOWN_KEDRO_PATHS"


def test_subpackage_import_graph_has_no_cycle(graph):
    def sub(m: str) -> str:
        return m.split(".")[1] if m.count(".") else m

    edges: dict[str, set[str]] = {}
    for m, deps in graph.items():
        for d in deps:
            if d in graph and sub(d) != sub(m):
                edges.setdefault(sub(m), set()).add(sub(d))
    from graphlib import CycleError, TopologicalSorter

    try:
        tuple(TopologicalSorter(edges).static_order())
    except CycleError as err:
        pytest.fail(f"import cycle between rla_pipeline subpackages: {' -> '.join(err.args[1])}")


_PROBE = """
import importlib, json, sys
names, culprit = json.loads(sys.argv[1]), None
for n in names:
    importlib.import_module(n)
    if "kedro" in sys.modules:
        culprit = n
        break
print(json.dumps(culprit))
"""


@pytest.mark.parametrize("floor", FLOORS)
def test_importing_a_floor_does_not_load_kedro(floor):
    names = sorted(_module_name(p) for p in (PKG / floor).rglob("*.py"))
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(names)], capture_output=True, text=True,
                         timeout=600, env={"PYTHONPATH": str(SRC), "PATH": "", "KEDRO_DISABLE_TELEMETRY": "true"})
    assert res.returncode == 0, res.stderr[-3000:]
    culprit = json.loads(res.stdout.strip().splitlines()[-1])
    assert culprit is None, f"importing {culprit} loads kedro"


def test_the_checks_see_a_violation(tmp_path):
    """The static check is not vacuous: a lazy import of kedro in a function is found."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from kedro.io import AbstractDataset\n\nif __name__ == '__main__':\n    import optuna\n")
    global SRC
    old, SRC = SRC, tmp_path
    try:
        assert _imports(p) == {"kedro.io", "kedro.io.AbstractDataset"}
    finally:
        SRC = old
