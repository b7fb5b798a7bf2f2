"""W503, W504: what access rules allow on enforced listeners, judged exactly as the runtime
will judge requests.

On a listener whose ``client_certificates`` is ``optional`` or ``required``, everything is
denied unless a rule allows it. So that the build and the runtime can never disagree, the route
and caller questions are answered by the runtime's own
:class:`~meshgen.runtime.policy.access.AccessPolicy`, built from the same tables the runtime
loads (:mod:`meshgen.checks.access` imports this module only for a mesh with such listeners):

* W503: :meth:`AccessPolicy.partial` — a caller allowed some but not all of the services a
  route can reach (its ``to`` services, its mirror and their failover backups) gets 403 on
  every request to that route;
* W504: :meth:`AccessPolicy.matrix` — an enforced listener on which no caller may send anything
  anywhere (its redirect routes aside: a redirect forwards nothing and answers every caller the
  listener admits, as HAProxy's ``http-request redirect`` does; W505, which warned that it
  answered 403, is retired); on a tcp listener, :meth:`AccessPolicy.connection_denial` for
  every caller the rules name.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshgen import plan
from meshgen.checks.context import Context
from meshgen.model import AccessRule, Listener, Mesh, PathKey, Route
from meshgen.runtime import tables as t
from meshgen.runtime.policy.access import ANY, AccessPolicy, PartialAccess, listener_services

W503 = "W503"
W504 = "W504"


def check(ctx: Context, listeners: list[Listener]) -> None:
    """W503 and W504 on the enforced ``listeners`` of a mesh without skipped parts."""
    mesh = ctx.mesh
    by_name = {r.name: r for r in mesh.routes}
    served = list(dict.fromkeys(n for ls in listeners for n in mesh.listener_routes(ls)))
    full = policy(mesh, [by_name[n] for n in served if n in by_name])
    _partial(ctx, full, by_name)
    _disjoint(ctx, full, by_name)
    for listener in listeners:
        _listener(ctx, listener, by_name)


def policy(mesh: Mesh, routes: Iterable[Route] | None = None) -> AccessPolicy:
    """The runtime's policy for ``routes`` (default: all) of ``mesh``.

    Routes to unknown services are left out: E201 already stops the build for them.
    """
    chosen = mesh.routes if routes is None else routes
    runtime_routes = [plan.route(r) for r in chosen if all(d.call is not None for d in r.to)]
    clusters = [plan.cluster(s) for s in mesh.services.values()]
    rules = [t.AccessRule(r.source, r.service, r.methods, r.paths) for r in mesh.access]
    return AccessPolicy(rules, runtime_routes, clusters)


def _partial(ctx: Context, full: AccessPolicy, routes: dict[str, Route]) -> None:
    """W503 for each (route, caller) of ``AccessPolicy.partial`` that says something new."""
    found = full.partial()
    wildcard = {(p.route, p.allowed) for p in found if p.caller == ANY}
    for item in found:
        if item.caller != ANY and (item.route, item.allowed) in wildcard:
            continue  # its own rules add nothing here: the '*' warning covers it
        rule = _first_rule(ctx.mesh.access, item)
        if rule is None:
            continue
        route = routes[item.route]
        who = "any caller ('*')" if item.caller == ANY else f"'{item.caller}'"
        victims = (
            "callers without rules of their own for it get"
            if item.caller == ANY
            else f"'{item.caller}' gets"
        )
        allowed = ", ".join(f"'{s}'" for s in item.allowed)
        denied = ", ".join(f"'{s}'" for s in item.denied)
        ctx.warning(
            W503,
            f"access rules let {who} call {allowed} but not {denied}, which route "
            f"'{item.route}' can also send traffic to",
            rule.path,
            f"{victims} 403 on every request to route '{item.route}': a request is "
            "allowed only if every service it can reach (split, mirror, failover backup) "
            "allows it; allow all of them or none",
            related=_reasons(ctx, route, item.denied),
        )


def _disjoint(ctx: Context, full: AccessPolicy, routes: dict[str, Route]) -> None:
    """W503 too: every destination grants the caller something, but never the same thing."""
    partial = {(p.route, p.caller) for p in full.partial()}
    for row in full.matrix():
        if row.grants or not row.services or (row.route, row.caller) in partial:
            continue
        if not all(full.grants_for(row.caller, s) for s in row.services):
            continue
        own = [r for r in ctx.mesh.access if r.source == row.caller and r.service in row.services]
        if row.caller != ANY and not own:
            continue  # only '*' rules apply to it here: the '*' warning covers it
        rule = (own or [r for r in ctx.mesh.access if r.service in row.services])[0]
        who = "any caller ('*')" if row.caller == ANY else f"'{row.caller}'"
        ctx.warning(
            W503,
            f"access rules let {who} call each service route '{row.route}' can reach, but no "
            "method and path is allowed by all of them",
            rule.path,
            "a request is allowed only if every service it can reach (split, mirror, "
            "failover backup) allows it; give them the same methods and paths",
            related=[
                (
                    routes[row.route].path,
                    f"route '{row.route}' reaches " + ", ".join(f"'{s}'" for s in row.services),
                )
            ],
        )


def _first_rule(rules: Iterable[AccessRule], item: PartialAccess) -> AccessRule | None:
    """The caller's own first rule for an allowed service, else the first such ``*`` rule."""
    candidates = [r for r in rules if r.service in item.allowed]
    own = [r for r in candidates if r.source == item.caller]
    wild = [r for r in candidates if r.source == ANY]
    chosen = own or wild
    return chosen[0] if chosen else None


def _reasons(ctx: Context, route: Route, denied: tuple[str, ...]) -> list[tuple[PathKey, str]]:
    """Where the route (or a service's failover) makes it reach each denied service."""
    out: list[tuple[PathKey, str]] = []
    for service in denied:
        dest = next((d for d in route.to if d.service == service), None)
        if dest is not None:
            out.append((dest.path, f"route '{route.name}' sends traffic to '{service}' here"))
            continue
        if route.mirror is not None and route.mirror.service == service:
            out.append((route.mirror.path, f"route '{route.name}' mirrors traffic here"))
            continue
        origin = next((s for s in ctx.mesh.services.values() if s.failover.backup == service), None)
        if origin is not None:
            out.append(
                (
                    (*origin.failover.path, "backup"),
                    f"'{origin.name}' fails over to '{service}' here",
                )
            )
    return out


def _tcp_listener(ctx: Context, listener: Listener) -> None:
    """W504 for a tcp listener: no caller may reach every service it forwards to."""
    mesh = ctx.mesh
    if any(s not in mesh.services for s in listener.services()):
        return  # an unknown service (E208): the rules cannot be judged yet
    full = policy(mesh, [])
    clusters = {name: plan.cluster(s) for name, s in mesh.services.items()}
    reach = listener_services(plan.listener(mesh, listener, {}), clusters)
    if any(full.connection_denial(c, reach) is None for c in (*full.callers, ANY)):
        return
    ctx.warning(
        W504,
        f"listener '{listener.name}' checks callers but no access rule allows a connection "
        "to all of its services: every connection there is closed",
        (*listener.path, "tls", "client_certificates"),
        "add access rules from the callers to each service it forwards to (and their "
        "backups), or set client_certificates: none",
    )


def _listener(ctx: Context, listener: Listener, routes: dict[str, Route]) -> None:
    """W504: an enforced listener on which the rules allow nobody anything."""
    if listener.protocol == "tcp":
        _tcp_listener(ctx, listener)
        return
    served = [routes[n] for n in ctx.mesh.listener_routes(listener) if n in routes]
    forwarding = [r for r in served if r.redirect is None]
    mesh = ctx.mesh
    if not forwarding:
        return  # only redirects: they answer every caller the listener admits
    if any(d.call is None for r in served for d in r.to) or any(
        rule.service not in mesh.services for rule in mesh.access
    ):
        return  # an unknown service (E201, E205): the rules cannot be judged yet
    rows = policy(mesh, forwarding).matrix()
    if any(row.grants for row in rows):
        return
    but = ", except on its redirect routes" if len(forwarding) < len(served) else ""
    outcome = "is logged as denied (access: audit)" if listener.access == "audit" else "gets 403"
    ctx.warning(
        W504,
        f"listener '{listener.name}' checks callers but no access rule allows any request "
        f"on its routes: every request there {outcome}{but}",
        (*listener.path, "tls", "client_certificates"),
        "add access rules for the services its routes send to (every destination of a "
        "route), or set client_certificates: none",
    )
