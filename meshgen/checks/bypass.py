"""W510: access rules bypassed by a listener that does not check callers.

Access rules apply only on listeners that check client certificates; a listener without them
serves its routes to anyone who can reach it. When a route is served both on a listener that
enforces the rules and on one that checks no callers, the rules protect nothing: the mTLS
listener refuses ``POST /pay`` to a caller the plain one serves it to. Reported once per
plain listener, at the first such route it lists (or its name when it serves every route),
naming the routes and the listener whose rules they bypass. Redirect routes forward nothing
and are left out; an ``access: audit`` listener enforces nothing either, so it is not the
listener being bypassed.
"""

from __future__ import annotations

from meshgen.checks.access import enforced
from meshgen.checks.context import Context
from meshgen.model import Listener, PathKey

W510 = "W510"


def check(ctx: Context) -> None:
    mesh = ctx.mesh
    if mesh.skipped or not mesh.access:
        return
    forwarding = {r.name for r in mesh.routes if r.redirect is None}
    guarded: dict[str, Listener] = {}
    for listener in mesh.listeners:
        if enforced(listener) and listener.access == "enforce":
            for name in mesh.listener_routes(listener):
                guarded.setdefault(name, listener)
    for listener in mesh.listeners:
        if enforced(listener):
            continue
        open_routes = [
            n
            for n in dict.fromkeys(mesh.listener_routes(listener))
            if n in guarded and n in forwarding
        ]
        if not open_routes:
            continue
        first = open_routes[0]
        where: PathKey = (*listener.path, "name")
        if listener.routes is not None:
            where = (*listener.path, "routes", listener.routes.index(first))
        shown = ", ".join(f"'{n}'" for n in open_routes)
        strict = guarded[first]
        noun, them = ("route", "it") if len(open_routes) == 1 else ("routes", "them")
        ctx.warning(
            W510,
            f"listener '{listener.name}' serves {noun} {shown} without checking callers, so the "
            f"access rules that listener '{strict.name}' enforces on {them} are bypassed: anyone "
            f"who reaches '{listener.name}' gets what '{strict.name}' refuses",
            where,
            f"serve these routes only on listeners that check callers (list the routes of "
            f"'{listener.name}'), or set tls.client_certificates on '{listener.name}' too",
            related=[
                (
                    (*strict.path, "tls", "client_certificates"),
                    f"listener '{strict.name}' enforces the access rules here",
                )
            ],
        )
