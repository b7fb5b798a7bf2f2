"""Access-matrix target: ``DIST/access/matrix.txt``, who may call what where (issue 5).

The matrix is the runtime's own reduction of the rules (:meth:`AccessPolicy.matrix`), so the
file says exactly what the runtime will decide: for each listener that checks callers
(``client_certificates`` optional or required), each route it serves and each caller named
in a rule (then ``*``: any other caller with an identity of this mesh), the methods and path
prefixes allowed by **every** service the route can reach. One row per grant; a caller with
no grant gets one row with ``-`` (denied). Meshes without such a listener get no file: there
is nothing to enforce. Rows are plain whitespace-aligned columns, stable for diffs and tools.
"""

from __future__ import annotations

from meshgen.runtime.policy.access import ANY, AccessPolicy, MatrixRow, enforced_on
from meshgen.runtime.tables import Listener, Tables

from . import RenderContext

PATH = "access/matrix.txt"
COLUMNS = ("listener", "route", "caller", "methods", "paths", "services")
DENIED = "-"
ANY_METHOD = "*"


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    listeners = [listener for listener in tables.listeners if enforced_on(listener)]
    if not listeners:
        return {}
    policy = AccessPolicy.from_tables(tables)
    by_route: dict[str, list[MatrixRow]] = {}
    for row in policy.matrix():
        by_route.setdefault(row.route, []).append(row)
    redirects = {r.name for r in tables.routes if r.redirect is not None}
    rows: list[tuple[str, ...]] = []
    for listener in listeners:
        rows.extend(_listener_rows(listener, by_route, redirects))
    return {PATH: _header(ctx, listeners) + _table(rows)}


def _listener_rows(
    listener: Listener, by_route: dict[str, list[MatrixRow]], redirects: set[str]
) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for route in listener.routes:
        if route in redirects:
            out.append((listener.name, route, ANY, DENIED, DENIED, "(redirect)"))
            continue
        for row in by_route.get(route, ()):
            services = ",".join(row.services)
            if not row.grants:
                out.append((listener.name, route, row.caller, DENIED, DENIED, services))
            for grant in row.grants:
                methods = ",".join(sorted(grant.methods)) or ANY_METHOD
                out.append((listener.name, route, row.caller, methods, grant.prefix, services))
    return out


def _header(ctx: RenderContext, listeners: list[Listener]) -> str:
    enforced = ", ".join(
        f"{ls.name} ({ls.tls.client_certificates})" for ls in listeners if ls.tls is not None
    )
    return (
        f"# {ctx.header}\n"
        "# Access allow matrix: what each caller may do on each route of the listeners that\n"
        f"# check callers: {enforced}. Everything not listed is denied (403).\n"
        "# caller: a name from spiffe://<mesh>/<name>; '*' = any other caller with an identity.\n"
        "# methods: '*' = any method. paths: prefixes of the normalised path, on segment\n"
        "# boundaries. A row is what every service in 'services' allows (split targets, mirror,\n"
        "# failover backups); '-' = denied. A redirect route reaches no service: always 403.\n"
    )


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in (COLUMNS, *rows)) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"

    return "".join(line(r) for r in (COLUMNS, *rows))
