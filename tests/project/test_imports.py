"""The floors hold: the library floors never reach Kedro, and the package's import graph has no circle.

Every ``import`` in the package is parsed with ``ast``: at module top, inside function bodies (which the import-time
check cannot see and which hide circles from Python) and under ``if __name__ == "__main__":`` (running a module as a
program imports what its entry names, so an entry on a lower floor that starts a higher one is a circle too).
Checks, each able to fail on its own:
- at import time: each library floor's modules imported one by one in a fresh interpreter; the first that puts
  ``kedro`` in ``sys.modules`` is named;
- statically: from each library floor module, the modules it reaches must not import Kedro;
- statically: the graph of ``rla_pipeline`` modules has no cycle (every cycle is listed with the imports that
  make it), and neither has the graph of its subpackages.
The library floors are every subpackage but the Kedro floor (``pipelines``, ``datasets``): a new one is checked
without being listed here.
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
KEDRO_FLOOR = ("pipelines", "datasets")
FLOORS = tuple(sorted(p.parent.name for p in PKG.glob("*/__init__.py") if p.parent.name not in KEDRO_FLOOR))

# Known edges into the Kedro floor, each owned by someone who is removing it. An entry that no longer exists fails
# the test too, so the list only shrinks.
KNOWN_KEDRO_PATHS: set[tuple[str, str]] = set()


def _module_name(path: Path, root: Path | None = None) -> str:
    parts = path.relative_to(root or SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module the code of ``module`` imports (absolute names), anywhere in it: module top, function bodies,
    ``if TYPE_CHECKING:`` and ``if __name__ == "__main__":`` blocks alike. ``from pkg import name`` gives ``pkg``
    and ``pkg.name`` (``name`` may be a module), but not ``pkg`` when it is a package ``module`` lives in and every
    name is one of its ``modules`` (``from . import sibling``: that package is ``module``'s own, imported before
    it anyway, so that is no edge back up to it)."""
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".")
    home = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
            if not (base in home and names <= modules):
                out.add(base)
            out |= names
    return out


def _imports(path: Path) -> set[str]:
    return imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """``{module: (source, is_package)}`` -> module -> the modules it imports: those of the package resolved to
    modules that exist (``from pkg import sub`` in ``pkg/__init__.py`` is no edge from ``pkg`` to itself), the
    others as written."""
    g, modules = {}, frozenset(sources)
    for name, (source, is_package) in sources.items():
        deps = set()
        for imp in imports_of(source, name, is_package, modules):
            if imp.startswith("rla_pipeline"):
                if imp in sources and imp != name:
                    deps.add(imp)
            else:
                deps.add(imp)
        g[name] = deps
    return g


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of more than one module, over the edges between
    modules of ``graph``; each group's cycle starts at its first module by name. Empty: the graph is acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def edges(m: str) -> list[str]:
        return sorted(d for d in graph[m] if d in graph)

    for root in sorted(graph):  # Tarjan's algorithm, iterative (no recursion limit on a long chain)
        if root in index:
            continue
        work = [(root, iter(edges(root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            m, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges(nxt))))
                elif nxt in on_stack:
                    low[m] = min(low[m], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[m])
            if low[m] == index[m]:
                group = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    group.append(x)
                    if x == m:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    out = []
    for group in sorted(groups):
        members, start = set(group), group[0]
        # shortest way back to the start inside the group (breadth first from start)
        prev, todo = {start: ""}, [start]
        while todo and start not in {d for m in todo for d in edges(m)}:
            nxt = []
            for m in todo:
                for d in edges(m):
                    if d in members and d not in prev:
                        prev[d] = m
                        nxt.append(d)
            todo = nxt
        last = min(m for m in todo if start in edges(m))
        path = [last]
        while prev[path[-1]]:
            path.append(prev[path[-1]])
        out.append([*reversed(path), start])
    return out


def describe_cycles(found: list[list[str]]) -> str:
    short = (lambda m: m.removeprefix("rla_pipeline."))
    return "\n".join(" -> ".join(map(short, c)) for c in found)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """module -> the modules it imports (rla_pipeline ones resolved to files that exist, others as written)."""
    return import_graph({_module_name(p): (p.read_text(), p.name == "__init__.py") for p in PKG.rglob("*.py")})


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


def test_the_floors_are_every_library_subpackage():
    assert {"models", "training", "features", "episodes", "stages", "rl", "sim"} <= set(FLOORS)
    assert not set(FLOORS) & set(KEDRO_FLOOR)


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


def test_module_import_graph_has_no_cycle(graph):
    """No two modules import each other, directly or round a loop, through any import: function bodies and
    ``__main__`` blocks count (a lazy import only hides a circle; it does not break it)."""
    found = cycles(graph)
    assert not found, (f"{len(found)} import circle(s) between rla_pipeline modules (one loop of each shown; move "
                       f"what both ends need to the lower module):\n{describe_cycles(found)}")


def test_subpackage_import_graph_has_no_cycle(graph):
    def sub(m: str) -> str:
        return m.split(".")[1] if m.count(".") else m

    edges: dict[str, set[str]] = {}
    for m, deps in graph.items():
        for d in deps:
            if d in graph and sub(d) != sub(m):
                edges.setdefault(sub(m), set()).add(sub(d))
    found = cycles({s: edges.get(s, set()) for s in {*edges, *(d for ds in edges.values() for d in ds)}})
    assert not found, f"import cycle(s) between rla_pipeline subpackages:\n{describe_cycles(found)}"


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
    """The static checks are not vacuous: imports in a function and under ``__main__`` are found, and a circle
    made only of such imports is reported."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from kedro.io import AbstractDataset\n\nif __name__ == '__main__':\n    import optuna\n")
    assert imports_of(p.read_text(), "m", False) == {"kedro.io", "kedro.io.AbstractDataset", "optuna"}
    loop = import_graph({
        "rla_pipeline.low": ("X = 1\n\nif __name__ == '__main__':\n    from rla_pipeline.high import main\n", False),
        "rla_pipeline.mid": ("from rla_pipeline.low import X\n", False),
        "rla_pipeline.high": ("def main():\n    from rla_pipeline import mid\n", False),
        "rla_pipeline.pkg": ("from rla_pipeline.pkg import sub\n", True),  # a package importing its submodule
        "rla_pipeline.pkg.sub": ("from . import other\n", False),
        "rla_pipeline.pkg.other": ("import numpy\n", False),
    })
    assert cycles(loop) == [["rla_pipeline.high", "rla_pipeline.mid", "rla_pipeline.low", "rla_pipeline.high"]]
    del loop["rla_pipeline.low"]
    assert cycles(loop) == []
