"""The embedded-runtime target: data-only Python tables, ``__main__.py`` and the runtime copy.

``DIST/mesh/*.py`` hold nothing but ``from meshgen_runtime.tables import ...`` and literal
constructor calls (see :mod:`.literals`: values that repeat are module-level constants written
once), so the runtime reads a spec it never parses.
``DIST/meshgen_runtime/`` is a verbatim copy of the ``meshgen/runtime`` package tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshgen.emit import VERBATIM
from meshgen.resources import runtime_dir
from meshgen.runtime.tables import Tables

from . import RenderContext
from .literals import SharedLiterals


def _table_values(tables: Tables) -> dict[str, dict[str, Any]]:
    """The module-level names of each ``DIST/mesh/<stem>.py`` (what the runtime loader reads)."""
    return {
        "routing": {
            "MESH": tables.mesh,
            "CLUSTERS": tables.clusters,
            "ROUTES": tables.routes,
            "LISTENERS": tables.listeners,
        },
        "health": {
            "HEALTH_CHECKS": tables.health_checks,
            "OUTLIER_DETECTION": tables.outlier_detection,
        },
        "tls": {"CLIENT_TLS": tables.client_tls, "ACCESS": tables.access},
        "monitoring": {"ALERTS": tables.alerts, "SLOS": tables.slos},
    }


def runtime_sources() -> dict[str, Path]:
    """Every module of the runtime's package tree by its path under ``DIST/meshgen_runtime/``
    (subpackages included, ``__pycache__`` left out), in sorted order."""
    root = runtime_dir()
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.relative_to(root).parts
    }


def runtime_files() -> dict[str, str]:
    """``meshgen_runtime/...`` for every runtime module, byte for byte."""
    out: dict[str, str] = {}
    for rel, path in runtime_sources().items():
        with open(path, encoding="utf-8", newline="") as f:
            out[f"{VERBATIM}{rel}"] = f.read()
    return out


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """Render every file of this target, keyed by its path relative to DIST."""
    files: dict[str, str] = {}
    for stem, values in _table_values(tables).items():
        template = ctx.env.get_template(f"python/{stem}.py.j2")
        literals = SharedLiterals(values)
        files[f"mesh/{stem}.py"] = template.render(
            header=ctx.header,
            imports=sorted(literals.classes),
            constants=literals.constants(),
            **{key: literals.literal(key) for key in values},
        )
    for name in ("__main__.py", "requirements.txt"):
        files[name] = ctx.env.get_template(f"python/{name}.j2").render(header=ctx.header)
    files.update(runtime_files())
    return files
