"""Read a built DIST's tables without running its code (``meshgen plan`` on a DIST).

Theory of operation: the runtime loads ``DIST/mesh/*.py`` by executing them, which is right for
a DIST it is about to serve. ``meshgen plan`` may be handed a DIST from a pull request, so it
never executes one: each table file is parsed with :mod:`ast` and only the shapes the python
target writes are evaluated (an import from ``meshgen_runtime.tables``, a docstring, and
assignments of literals, earlier names, and keyword-only calls of the table types). Anything
else (an attribute, a subscript, a call of anything but a table type) is refused with the file
and line, so a tampered DIST cannot run code here.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any, Final

from meshgen.runtime import tables as t
from meshgen.runtime.app.loader import TABLE_FILES, TablesError, tables_from

TYPES: Final = {
    name: cls
    for name, cls in vars(t).items()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == t.__name__
}
MODULE: Final = "meshgen_runtime.tables"


class _Refused(Exception):
    def __init__(self, node: ast.AST, what: str) -> None:
        super().__init__(f"line {getattr(node, 'lineno', 0)}: {what}")


def read_dist_tables(dist: Path) -> t.Tables:
    """The tables of ``dist``; :class:`TablesError` names the file and what it refused."""
    ns: dict[str, Any] = {}
    for stem in TABLE_FILES:
        path = dist / "mesh" / f"{stem}.py"
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
            for stmt in tree.body:
                _statement(stmt, ns)
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise TablesError(f"{path}: {exc}") from exc
        except _Refused as exc:
            raise TablesError(f"{path}: {exc} (not a table file meshgen writes)") from exc
    return tables_from(ns, dist)


def _statement(stmt: ast.stmt, ns: dict[str, Any]) -> None:
    if isinstance(stmt, ast.ImportFrom) and stmt.module == MODULE:
        unknown = [a.name for a in stmt.names if a.name not in TYPES]
        if unknown:
            raise _Refused(stmt, f"unknown table type {unknown[0]!r} (built by another version?)")
    elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return
    elif (
        isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
    ):
        ns[stmt.targets[0].id] = _value(stmt.value, ns)
    else:
        raise _Refused(stmt, f"a {type(stmt).__name__} statement")


def _value(node: ast.expr, ns: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = _value(node.operand, ns)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return -operand
    if isinstance(node, ast.Tuple):
        return tuple(_value(item, ns) for item in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_value(k, ns): _value(v, ns) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.Name) and node.id in ns:
        return ns[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in TYPES
        and not node.args
        and all(k.arg is not None for k in node.keywords)
    ):
        kwargs = {str(k.arg): _value(k.value, ns) for k in node.keywords}
        try:
            return TYPES[node.func.id](**kwargs)
        except TypeError as exc:
            raise _Refused(node, f"{exc} (built by another version?)") from exc
    raise _Refused(node, f"a {type(node).__name__} expression")
