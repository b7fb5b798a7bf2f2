"""Semantic checks on a lowered mesh: everything the schema cannot express.

Each module checks one concern and reports through :class:`Context`, which turns the model's
source paths into spans only when something is reported. ``run_all`` returns every diagnostic
of every check, sorted by position; codes are documented in docs/diagnostics.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgen.checks import (
    access,
    addresses,
    bypass,
    chains,
    failover,
    limits,
    merging,
    monitoring,
    protocols,
    references,
    routes,
    shadowing,
    tls,
)
from meshgen.checks.context import Context
from meshgen.diagnostics import Diagnostic

if TYPE_CHECKING:
    from meshgen.model import Mesh
    from meshgen.source import Document

CHECKS = (
    merging.check,
    references.check,
    routes.check,
    shadowing.check,
    addresses.check,
    limits.check,
    failover.check,
    tls.check,
    access.check,
    bypass.check,
    chains.check,
    monitoring.check,
    protocols.check,
)


def run_all(mesh: Mesh, doc: Document) -> list[Diagnostic]:
    """Every semantic diagnostic of ``mesh``, sorted by position."""
    ctx = Context(mesh, doc)
    for check in CHECKS:
        check(ctx)
    return sorted(ctx.diagnostics, key=lambda d: d.sort_key)
