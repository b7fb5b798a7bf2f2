"""E3xx/W302-W303: route structure (weights, redirect vs to, rewrite, regexes, names), retries
and routes no listener serves.

W303 needs every listener to list its ``routes:`` (a listener without the list serves every
route) and is left out while a listener names an unknown route (E204, probably a typo for it);
default routes (no ``routes:`` in mesh.yaml) are never reported, since a service may
exist only as a failover backup.

The retry warning is reported once per place ``per_try_timeout`` is written, so a
``defaults:`` value shared by many services gives one warning, not one per service.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from meshgen.checks.context import Context
from meshgen.durations import format_duration
from meshgen.model import CallPolicy, Destination, PathKey, Route, TcpDestination

UNSERVED = "W303"


def check(ctx: Context) -> None:
    first_seen: dict[str, PathKey] = {}
    for route in ctx.mesh.routes:
        if route.synthetic:
            continue
        name_path = (*route.path, "name")
        if route.name in first_seen:
            ctx.error(
                "E306",
                f"route name '{route.name}' is used twice",
                name_path,
                "route names must be unique: listeners and metrics refer to routes by name",
                related=[(first_seen[route.name], "first used here")],
            )
        else:
            first_seen[route.name] = name_path
        _weights(ctx, f"route '{route.name}'", route.to, route.path)
        _shape(ctx, route)
        _regexes(ctx, route)
    for listener in ctx.mesh.listeners:
        _weights(ctx, f"tcp listener '{listener.name}'", listener.to, listener.path)
    _retries(ctx)
    _unserved(ctx)


def _unserved(ctx: Context) -> None:
    """W303: every http listener lists its routes and none lists this one."""
    listeners = [lst for lst in ctx.mesh.listeners if lst.protocol == "http"]
    if ctx.mesh.skipped.any("listeners") or any(lst.routes is None for lst in listeners):
        return
    served = {name for listener in listeners for name in listener.routes or ()}
    if served - {route.name for route in ctx.mesh.routes}:
        return  # a listener names an unknown route (E204): likely the one meant here
    names = ", ".join(f"'{listener.name}'" for listener in listeners)
    for route in ctx.mesh.routes:
        if route.synthetic or route.name in served:
            continue
        ctx.warning(
            UNSERVED,
            f"route '{route.name}' is served by no listener: every listener lists its routes "
            "and none lists it"
            if listeners
            else f"route '{route.name}' is served by no listener: every listener is tcp",
            (*route.path, "name"),
            f"add '{route.name}' to the routes of a listener ({names}), or remove the route"
            if listeners
            else "add an http listener, or remove the route",
        )


def _weights(
    ctx: Context,
    owner: str,
    to: Sequence[Destination | TcpDestination],
    path: PathKey,
) -> None:
    """E301/E302 for the ``to`` list of a route or a tcp listener (``owner`` names it)."""
    if len(to) > 1:
        for index, dest in enumerate(to):
            if dest.weight is None:
                ctx.error(
                    "E302",
                    f"destination '{dest.service}' of {owner} has no weight",
                    (*path, "to", index),
                    f"a {owner.rsplit(' ', 1)[0]} with {len(to)} destinations needs a weight "
                    "on each; the weights sum to 100",
                )
        if any(d.weight is None for d in to):
            return
    total = sum(d.weight for d in to if d.weight is not None)
    if to and total != 100 and not (len(to) == 1 and to[0].weight is None):
        shown = " + ".join(str(d.weight) for d in to)
        ctx.error(
            "E301",
            f"weights of {owner} sum to {total} ({shown}), not 100",
            (*path, "to"),
            key=True,
        )


def _shape(ctx: Context, route: Route) -> None:
    if route.redirect is not None and route.has_to:
        ctx.error(
            "E303",
            f"route '{route.name}' has both 'redirect' and 'to'",
            (*route.path, "redirect"),
            "a redirect answers the request itself; remove 'to' or 'redirect'",
            key=True,
        )
    elif route.redirect is None and not route.to:
        ctx.error(
            "E303",
            f"route '{route.name}' has neither 'to' nor 'redirect'",
            (*route.path, "name"),
            "add 'to: [{service: NAME}]' or a 'redirect'",
        )
    rewrite = route.rewrite
    if rewrite is not None and rewrite.path_prefix is not None and not _has_prefix(ctx, route):
        ctx.error(
            "E304",
            f"route '{route.name}' rewrites 'path_prefix' but does not match on 'path_prefix'",
            (*route.path, "rewrite", "path_prefix"),
            "rewrite.path_prefix replaces the matched match.path_prefix; add one",
            key=True,
        )


def _has_prefix(ctx: Context, route: Route) -> bool:
    """Whether ``match.path_prefix`` was written (the default match is prefix '/' too)."""
    match = ctx.doc.data["routes"][route.path[1]].get("match") or {}
    return "path_prefix" in match


def _regexes(ctx: Context, route: Route) -> None:
    match = route.match
    checks: list[tuple[str, PathKey]] = []
    if match.path_kind == "regex":
        checks.append((match.path, (*route.path, "match", "path_regex")))
    written = ctx.doc.data["routes"][route.path[1]].get("match") or {}
    names = {str(n).lower(): str(n) for n in written.get("headers") or {}}
    checks.extend(
        (h.value, (*route.path, "match", "headers", names.get(h.name, h.name), "regex"))
        for h in match.headers
        if h.kind == "regex"
    )
    for pattern, path in checks:
        try:
            re.compile(pattern)
        except re.error as exc:
            ctx.error(
                "E305",
                f"regex '{pattern}' of route '{route.name}' does not compile: {exc}",
                path,
                "Python 're' syntax; the whole value must match",
            )


def _retries(ctx: Context) -> None:
    seen: set[PathKey] = set()
    calls: list[tuple[CallPolicy, str]] = [
        (s.call, f"service '{s.name}'") for s in ctx.mesh.services.values()
    ]
    for route in ctx.mesh.routes:
        calls.extend(
            (d.call, f"route '{route.name}' to '{d.service}'")
            for d in route.to
            if d.call is not None and not route.synthetic
        )
    for call, owner in calls:
        retries = call.retries
        if retries is None or retries.per_try_timeout_s is None or retries.attempts <= 0:
            continue
        tries = retries.attempts + 1
        if retries.per_try_timeout_s * tries <= call.timeout_s:
            continue
        where = call.origin("retries.per_try_timeout").path
        if where in seen:
            continue
        seen.add(where)
        per_try = format_duration(retries.per_try_timeout_s)
        total = format_duration(retries.per_try_timeout_s * tries)
        ctx.warning(
            "W302",
            f"{tries} tries x per_try_timeout {per_try} = {total} exceed the timeout "
            f"{format_duration(call.timeout_s)} of {owner}",
            where,
            "the timeout covers all tries, so later tries are cut short; lower "
            "per_try_timeout or attempts, or raise timeout",
            related=[(call.origin("timeout").path or where, "timeout set here")],
        )
