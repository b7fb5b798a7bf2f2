"""Schema-valid mesh.yaml data -> :class:`meshgen.model.Mesh`.

Theory of operation: the schema has already rejected wrong shapes, so lowering only parses
values (durations, addresses), merges policy (built-in < ``defaults:`` < service < route) and
adds the implied parts (default routes, the ``edge`` listener, the admin address). Each part of
mesh.yaml is lowered by a plain function over one :class:`~meshgen.lower.context.LowerContext`
(services.py, routes.py, listeners.py, monitoring.py); :func:`lower` calls them in order.
Merging works on the plain mappings (merge.py): ``defaults:`` is overlaid once, then each
service overlays a copy, recording per dotted field the :class:`Origin` of the value that won.
Built-in values are never stored in the merged mapping: a missing key means "built-in" and
the functions supply it from :mod:`meshgen.builtin`, so an untouched field costs nothing.
Values the schema cannot rule out (a port above 65535, a malformed address) become E401/E402
diagnostics, never exceptions; the part of the spec holding one (a service, a route, ...) is
then left out (:mod:`meshgen.units`) and the rest lowered, so the checks still judge it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgen.diagnostics import Diagnostic, has_errors
from meshgen.lower import listeners, monitoring, routes, services
from meshgen.lower.context import LowerContext, normalize_host, split_address
from meshgen.lower.merge import overlay
from meshgen.model import Mesh, PathKey, Skipped
from meshgen.units import skipped, units_of

if TYPE_CHECKING:
    from meshgen.source import Document

__all__ = ["LowerContext", "lower", "normalize_host", "overlay", "split_address"]


def lower(
    doc: Document, skip: frozenset[PathKey] = frozenset()
) -> tuple[Mesh | None, list[Diagnostic]]:
    """Build the typed mesh without the units in ``skip``, and every E401/E402.

    A unit with such an error is left out too (``Mesh.skipped`` says which); the mesh is None
    only when an error lies outside every unit (the admin address).
    """
    ctx = LowerContext(doc, skip)
    mesh = _mesh(ctx)
    diagnostics = sorted(ctx.diagnostics, key=lambda d: d.sort_key)
    if not has_errors(diagnostics):
        return mesh, diagnostics
    failed = units_of(ctx.failed)
    if failed is None:
        return None, diagnostics
    return _mesh(LowerContext(doc, skip | failed)), diagnostics


def _mesh(ctx: LowerContext) -> Mesh:
    data = ctx.data
    by_name = services.services(ctx)
    (admin_host, admin_port), admin_path = listeners.admin(ctx)
    monitoring_raw = data.get("monitoring") or {}
    head = data.get("mesh") or {}
    all_routes = routes.routes(ctx, by_name)
    return Mesh(
        name=str(head.get("name", "")),
        domain=ctx.domain,
        admin_host=admin_host,
        admin_port=admin_port,
        admin_path=admin_path,
        alertmanager=monitoring_raw.get("alertmanager"),
        services=by_name,
        routes=all_routes,
        listeners=listeners.listeners(ctx),
        access=listeners.access(ctx),
        alerts=monitoring.alerts(ctx, monitoring_raw.get("alerts") or []),
        slos=monitoring.slos(ctx, monitoring_raw.get("slos") or []),
        gaps=tuple(ctx.gaps),
        base_dir=ctx.doc.folder,
        skipped=skipped(data, ctx.skip) if ctx.skip else Skipped(),
        source=ctx.doc,
    )
