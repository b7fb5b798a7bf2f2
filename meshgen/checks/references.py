"""E2xx: every name a spec refers to exists (services, subsets, routes, a tcp listener's
services).

``access`` ``from`` is a caller identity, not a reference: it need not be a service. A name of
a part left out after an earlier error (``Mesh.skipped``) is not reported as unknown.
"""

from __future__ import annotations

from meshgen.checks.context import Context, did_you_mean
from meshgen.model import PathKey


def check(ctx: Context) -> None:
    mesh = ctx.mesh
    services = {*mesh.services, *mesh.skipped.services}  # names a reference may use
    for route in mesh.routes:
        if route.synthetic:
            continue
        owner = f"route '{route.name}'"
        for dest in route.to:
            _destination(
                ctx, owner, dest.service, dest.subset, dest.path, "E201", "sends traffic to"
            )
        if route.mirror is not None:
            mirror = route.mirror
            _destination(
                ctx,
                owner,
                mirror.service,
                mirror.subset,
                mirror.path,
                "E203",
                "mirrors traffic to",
            )
    for listener in mesh.listeners:
        owner = f"tcp listener '{listener.name}'"
        for target in listener.to:
            _destination(
                ctx, owner, target.service, target.subset, target.path, "E208", "forwards to"
            )
        for entry in listener.sni:
            if entry.service not in services:
                ctx.error(
                    "E208",
                    f"{owner} forwards server name '{entry.pattern}' to unknown service "
                    f"'{entry.service}'",
                    entry.path,
                    did_you_mean(entry.service, services),
                )
    route_names = [r.name for r in mesh.routes]
    known_routes = set(route_names)
    for listener in mesh.listeners:
        if listener.protocol == "tcp":
            continue  # its routes are E803
        for index, name in enumerate(listener.routes or ()):
            if name not in known_routes and not mesh.skipped.route(name):
                ctx.error(
                    "E204",
                    f"listener '{listener.name}' serves unknown route '{name}'",
                    (*listener.path, "routes", index),
                    did_you_mean(name, route_names),
                )
    for rule in mesh.access:
        if rule.service not in services:
            ctx.error(
                "E205",
                f"access rule from '{rule.source}' names unknown service '{rule.service}'",
                (*rule.path, "to"),
                did_you_mean(rule.service, services),
            )
    watchers = [(f"alert '{a.name}'", a.service, a.path) for a in mesh.alerts]
    watchers += [(f"SLO '{s.name}'", s.service, s.path) for s in mesh.slos]
    for what, watched, path in watchers:
        if watched not in services:
            ctx.error(
                "E206",
                f"{what} watches unknown service '{watched}'",
                (*path, "service"),
                did_you_mean(watched, services),
            )
    for service in mesh.services.values():
        backup = service.failover.backup
        if backup is not None and backup not in services:
            ctx.error(
                "E207",
                f"service '{service.name}' fails over to unknown service '{backup}'",
                (*service.failover.path, "backup"),
                did_you_mean(backup, services),
            )


def _destination(
    ctx: Context,
    owner: str,
    service_name: str,
    subset: str | None,
    path: PathKey,
    code: str,
    verb: str,
) -> None:
    service = ctx.mesh.services.get(service_name)
    if service is None and service_name in ctx.mesh.skipped.services:
        return
    if service is None:
        ctx.error(
            code,
            f"{owner} {verb} unknown service '{service_name}'",
            (*path, "service"),
            did_you_mean(service_name, {*ctx.mesh.services, *ctx.mesh.skipped.services}),
        )
        return
    if subset is not None and service.subset(subset) is None:
        names = [s.name for s in service.subsets]
        hint = did_you_mean(subset, names) or (
            f"service '{service_name}' has subsets: {', '.join(names)}"
            if names
            else f"service '{service_name}' defines no subsets"
        )
        ctx.error(
            "E202",
            f"{owner} {verb} unknown subset '{subset}' of service '{service_name}'",
            (*path, "subset"),
            hint,
        )
