"""The runtime's layers: every import points down (or within its own layer) and none closes a
cycle, ``TYPE_CHECKING`` imports included; the runtime never imports the compiler.

Layers, lowest first (docs/architecture.md): ``tables.py`` (the compiler/runtime contract),
``codec/``, ``policy/``, ``upstream/``, ``forward/``, ``observe/``, ``app/`` (with the
package's own ``__init__`` and ``launch``, which start it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from meshgen.resources import runtime_dir

LAYERS = ("tables", "codec", "policy", "upstream", "forward", "observe", "app")
TOP_LEVEL = {"tables": "tables", "launch": "app", "compiled": "app", "accelerate": "app", "": "app"}
Graph = dict[str, set[str]]


def _modules(root: Path) -> dict[str, Path]:
    """Every runtime module by dotted name under the package ("" for its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], list[str]]:
    """(runtime modules ``name`` imports, absolute imports of ``meshgen``), every statement."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found: set[str] = set()
    outside: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            outside += [a.name for a in node.names if a.name.split(".")[0] == "meshgen"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").split(".")[0] == "meshgen":
                    outside.append(node.module or "")
                continue
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:  # ``from .codec import http1`` imports a module
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target)
    return found, outside


def _graph(root: Path) -> Graph:
    known = _modules(root)
    return {name: _imports(name, path, known)[0] for name, path in known.items()}


def _layer(module: str) -> int:
    head = module.split(".")[0]
    return LAYERS.index(TOP_LEVEL.get(module, head))


def upward(graph: Graph) -> list[str]:
    """Imports that point to a higher layer."""
    return sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if _layer(b) > _layer(a)
    )


def cycles(graph: Graph) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_sits_in_a_layer() -> None:
    for module in _modules(runtime_dir()):
        head = module.split(".")[0]
        assert module in TOP_LEVEL or head in LAYERS[1:], f"{module}: in no layer"


def test_imports_point_down_only() -> None:
    assert upward(_graph(runtime_dir())) == []


def test_no_import_cycle() -> None:
    assert cycles(_graph(runtime_dir())) == []


def test_the_runtime_never_imports_the_compiler() -> None:
    """It is copied into DIST as ``meshgen_runtime``: an import of ``meshgen`` would break."""
    known = _modules(runtime_dir())
    for name, path in known.items():
        assert _imports(name, path, known)[1] == [], name


@pytest.mark.parametrize(
    ("graph", "ups", "loops"),
    [
        ({"codec.x": {"forward.y"}, "forward.y": set()}, ["codec.x -> forward.y"], []),
        (
            {"forward.a": {"forward.b"}, "forward.b": {"forward.a"}},
            [],
            [["forward.a", "forward.b"]],
        ),
        ({"app.main": {"tables", "codec.x"}, "codec.x": {"tables"}, "tables": set()}, [], []),
    ],
)
def test_the_checks_catch_what_they_should(
    graph: Graph, ups: list[str], loops: list[list[str]]
) -> None:
    assert upward(graph) == ups
    assert cycles(graph) == loops
