"""E504, W503: access rules need a listener that checks identities, and must cover splits.

Rules apply only on listeners whose ``client_certificates`` is ``optional`` or ``required``.
A request is allowed only when a rule allows the caller for *every* service its route can
send to, so a rule set that allows a caller some but not all destinations of a route served
there makes that route answer 403 to the caller: a warning, reported once per caller and
route at the caller's first rule for one of the route's destinations.
"""

from __future__ import annotations

from collections import defaultdict

from meshgen.checks.context import Context
from meshgen.model import AccessRule


def check(ctx: Context) -> None:
    mesh = ctx.mesh
    if not mesh.access:
        return
    checking = [
        listener
        for listener in mesh.listeners
        if listener.tls is not None and listener.tls.client_certificates != "none"
    ]
    if not checking:
        ctx.error(
            "E504",
            "access rules are set but no listener accepts client certificates",
            ("access",),
            "set tls.client_certificates: optional or required on a listener; callers are "
            "identified by their certificate",
            key=True,
        )
        return
    served = {name for listener in checking for name in mesh.listener_routes(listener)}
    by_source: dict[str, list[AccessRule]] = defaultdict(list)
    for rule in mesh.access:
        by_source[rule.source].append(rule)
    wildcard = {rule.service for rule in by_source.get("*", ())}
    for route in mesh.routes:
        destinations = list(dict.fromkeys(d.service for d in route.to))
        if route.name not in served or len(destinations) < 2:
            continue
        for source, rules in by_source.items():
            allowed = {r.service for r in rules} | wildcard
            denied = [d for d in destinations if d not in allowed]
            own = [r for r in rules if r.service in destinations]
            if not denied or not own:
                continue
            shown = ", ".join(f"'{d}'" for d in denied)
            ctx.warning(
                "W503",
                f"access rules let '{source}' call '{own[0].service}' but not {shown}, which "
                f"route '{route.name}' also sends traffic to",
                own[0].path,
                f"'{source}' gets 403 on every request to route '{route.name}'; allow all of "
                "its destinations or none",
                related=[((*route.path, "to"), f"route '{route.name}' splits traffic here")],
            )
