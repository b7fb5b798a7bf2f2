"""``meshgen explain --request``: why a request goes where it goes, decided by the runtime itself.

Theory of operation: explain never decides anything on its own. The spec is compiled to the
runtime's tables; the request target is normalised by the runtime's
:func:`~meshgen.runtime.codec.paths.split_target`, the listener's routes are compiled by the
runtime's :class:`~meshgen.runtime.policy.router.Router`, the chosen route is
``Router.match``'s answer, the access verdict is
:meth:`~meshgen.runtime.policy.access.AccessPolicy.denial`'s and the endpoints a subset selects
are :func:`~meshgen.runtime.upstream.upstreams.subset_members`'. What explain adds is the
*why*: for each route before the match, each condition is evaluated with the route's own
compiled predicates (host candidates, methods, path, header matchers) and the ones that fail
are named; the origin of every value comes from the model (:mod:`.effective`). A differential
test runs the same requests through a running runtime and asserts the same route and verdict.

The order of the trace is the runtime's order of decisions: target, route, split, redirect,
access, then the destination's policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from meshgen.model import Mesh
from meshgen.review.effective import (
    Setting,
    destination_settings,
    route_settings,
    service_settings,
    where,
)
from meshgen.runtime.app.table_view import target_name
from meshgen.runtime.codec.paths import split_target, target_authority, valid_host
from meshgen.runtime.policy.access import AccessPolicy, enforced_on, rule_grants
from meshgen.runtime.policy.router import CompiledRoute, Router
from meshgen.runtime.tables import Listener, StaticDiscovery, Tables, Target
from meshgen.runtime.upstream.health import failover_select
from meshgen.runtime.upstream.upstreams import subset_members

FORWARDED = "forwarded to the split below"
DENIED = "403: access denied"


class RequestError(ValueError):
    """A ``--request`` or ``-H`` the runtime would not accept; the message says why."""


@dataclass(frozen=True)
class Request:
    """What explain is asked about: ``target`` as written (absolute URL or ``/path``)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, value), in order
    caller: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), as the runtime's router reads it."""
        return next((v for k, v in self.headers if k == name), None)

    @property
    def host(self) -> str:
        """The host the runtime routes on: an absolute URL's authority, else the Host header."""
        authority = target_authority(self.target.encode("ascii", "replace"))
        return authority if authority is not None else (self.header("host") or "")


def parse_request(text: str, headers: Sequence[str], caller: str | None) -> Request:
    """``"GET http://reviews/path"`` and ``-H "name: value"`` options -> :class:`Request`."""
    method, _, target = text.strip().partition(" ")
    target = target.strip()
    if not method.isalpha() or not method.isupper() or not target:
        raise RequestError(f"--request {text!r}: write METHOD URL, e.g. 'GET http://reviews/'")
    pairs = []
    for item in headers:
        name, colon, value = item.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise RequestError(f"-H {item!r}: write 'name: value'")
        pairs.append((name.lower(), value.strip()))
    request = Request(method, target, tuple(pairs), caller)
    authority = target_authority(target.encode("ascii", "replace"))
    if authority is not None and not (authority and valid_host(authority)):
        raise RequestError(f"--request {text!r}: the URL's host {authority!r} is not valid")
    if authority is None and not target.startswith("/"):
        raise RequestError(f"--request {text!r}: the URL must be absolute or start with /")
    if not request.host:
        raise RequestError("no host: give an absolute URL (http://HOST/path) or -H 'Host: HOST'")
    return request


@dataclass(frozen=True)
class RouteTry:
    """One route of the listener, in order: matched, or the conditions it failed."""

    name: str
    where: str | None
    failed: tuple[str, ...]  # empty: it matched
    tried: bool = True  # False: an earlier route matched first


@dataclass(frozen=True)
class Branch:
    """One destination of the chosen route's split and what the runtime will use for it."""

    service: str
    subset: str | None
    weight: int
    share: float  # percent of the route's requests
    where: str | None
    subset_labels: str | None
    endpoints: tuple[str, ...]  # what the subset selects (address, zone)
    preferred: tuple[str, ...]  # with failover zones: those used while every endpoint is up
    discovery: str | None  # DNS: resolved at run time
    backups: tuple[str, ...]  # the failover backup chain
    policy: tuple[Setting, ...]  # per-request policy of this destination
    service_policy: tuple[Setting, ...]  # the service's other settings


@dataclass(frozen=True)
class Access:
    """The access verdict: ``outcome`` what the caller gets; ``rules`` the FILE:LINE and text
    of the rule that allowed each service of the route or, when denied, of every rule for the
    service that denied."""

    enforced: bool
    allowed: bool
    reason: str
    outcome: str
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Trace:
    request: Request
    host: str
    path: str | None  # normalised; None: the target is invalid (400)
    listener: str
    listener_where: str | None
    listener_note: str
    routes: tuple[RouteTry, ...] = ()
    route: str | None = None
    route_where: str | None = None
    outcome: str = ""
    branches: tuple[Branch, ...] = ()
    mirror: str | None = None
    route_policy: tuple[Setting, ...] = ()
    access: Access | None = None


def _listener(mesh: Mesh, tables: Tables, request: Request, name: str | None) -> Listener:
    """``--listener``, else the first listener whose routes match the request (with ``--from``,
    first among those that check client certificates), else the first listener."""
    if name is not None:
        found = next((x for x in tables.listeners if x.name == name), None)
        if found is None:
            known = ", ".join(x.name for x in tables.listeners)
            raise RequestError(f"--listener {name!r}: no such listener (listeners: {known})")
        return found
    split = split_target(request.target)
    matching = [
        lst
        for lst in tables.listeners
        if split is not None
        and Router.for_listener(tables.routes, lst).match(
            request.host, split[0], request.method, request.header
        )
    ]
    if request.caller is not None:
        matching.sort(key=lambda lst: not enforced_on(lst))
    return (matching or list(tables.listeners))[0]


def _failed(
    cr: CompiledRoute, candidates: Sequence[CompiledRoute], request: Request, path: str
) -> tuple[str, ...]:
    """The conditions of ``cr`` the request does not meet, each evaluated by the router's own
    compiled predicate (the order of :meth:`CompiledRoute.matches`, host first)."""
    match = cr.route.match
    out: list[str] = []
    if cr not in candidates:
        out.append(f"host {request.host!r} is not {' or '.join(match.hosts)}")
    if cr.methods and request.method not in cr.methods:
        out.append(f"method {request.method} is not {' or '.join(sorted(cr.methods))}")
    if not cr.path(path):
        wants = {"prefix": "does not start with", "exact": "is not", "regex": "does not match"}
        out.append(f"path {path} {wants[match.path_kind]} {match.path}")
    for header, check in zip(match.headers, cr.headers, strict=True):
        if not check(request.header):
            got = request.header(header.name)
            wanted = "present" if header.kind == "present" else f"{header.kind} {header.value!r}"
            seen = "absent" if got is None else repr(got)
            out.append(f"header {header.name} is {seen}, not {wanted}")
    return tuple(out)


def _route_where(mesh: Mesh, name: str) -> str | None:
    route = next((r for r in mesh.routes if r.name == name), None)
    if route is None:
        return None
    if route.synthetic:
        service = mesh.services.get(name)
        return None if service is None else where(mesh, service.path)
    return where(mesh, route.path)


def _endpoint(address: str, zone: str | None) -> str:
    return address if zone is None else f"{address} (zone {zone})"


def _branch(mesh: Mesh, tables: Tables, route_name: str, index: int, total: int) -> Branch:
    route = next(r for r in mesh.routes if r.name == route_name)
    target: Target = next(r for r in tables.routes if r.name == route_name).to[index]
    cluster = next(c for c in tables.clusters if c.name == target.service)
    dest = route.to[index] if index < len(route.to) else None
    service = mesh.services[target.service]
    labels = None
    if target.subset is not None:
        subset = next(s for s in cluster.subsets if s.name == target.subset)
        labels = ", ".join(f"{k}: {v}" for k, v in subset.labels) or "(all endpoints)"
    endpoints: tuple[str, ...] = ()
    preferred: tuple[str, ...] = ()
    discovery = None
    if isinstance(cluster.discovery, StaticDiscovery):
        members = subset_members(cluster, cluster.discovery.endpoints, target.subset) or ()
        endpoints = tuple(_endpoint(e.address, e.zone) for e in members)
        fo = cluster.failover
        if fo.zones and members:
            chosen = failover_select(members, lambda _: True, fo.zones, fo.panic_threshold)
            preferred = tuple(_endpoint(e.address, e.zone) for e in chosen)
    else:
        dns = cluster.discovery
        discovery = f"DNS {dns.record_type} {dns.query_name}, resolved at run time"
    backups: list[str] = []
    backup = cluster.failover.backup
    while backup is not None and backup not in backups and backup != target.service:
        backups.append(backup)
        backup = next(c for c in tables.clusters if c.name == backup).failover.backup
    share = 100.0 * target.weight / total if total else 0.0
    policy = destination_settings(mesh, dest, target) if dest is not None else []
    per_request = ("timeout", "idle_timeout", "retries")  # shown with the destination
    rest = [
        s
        for s in service_settings(mesh, tables, service.name)
        if s.name.split(".")[0] not in per_request
    ]
    return Branch(
        target.service,
        target.subset,
        target.weight,
        share,
        where(mesh, dest.path) if dest is not None and not route.synthetic else None,
        labels,
        endpoints,
        preferred,
        discovery,
        tuple(backups),
        tuple(policy),
        tuple(rest),
    )


def _rule_text(mesh: Mesh, index: int) -> str:
    rule = mesh.access[index]
    methods = ",".join(rule.methods) or "any method"
    paths = ",".join(rule.paths) or "any path"
    return f"{where(mesh, rule.path)}: from {rule.source} to {rule.service} {methods} {paths}"


def _access(
    mesh: Mesh, tables: Tables, listener: Listener, route: str, request: Request, path: str
) -> Access:
    if not enforced_on(listener):
        reason = f"not checked on listener {listener.name} (no client certificates)"
        return Access(False, True, reason, FORWARDED)
    policy = AccessPolicy.from_tables(tables)
    caller = request.caller
    denied = policy.denial(route, caller, request.method, path)
    services = policy.routes.get(route, ())
    if caller is None:
        assert listener.tls is not None
        if listener.tls.client_certificates == "required":
            reason = "no client certificate (client_certificates: required); give one with --from"
            return Access(True, False, reason, "refused: the TLS handshake fails")
        reason = "no client certificate, so no rule applies; give the caller with --from"
        return Access(True, False, reason, _denied(listener))
    grants = [rule_grants(rule) for rule in tables.access]
    deciding: list[str] = []
    for service in services:
        for i, rule in enumerate(tables.access):
            mine = rule.service == service and rule.source in (caller, "*")
            if mine and any(g.permits(request.method, path) for g in grants[i]):
                deciding.append(_rule_text(mesh, i))
                break
    if denied is None:
        reason = f"allowed: {caller} may {request.method} {path} on {', '.join(services)}"
        return Access(True, True, reason, FORWARDED, tuple(deciding))
    reason = f"denied: no rule allows {caller} {request.method} {path} on {denied}"
    others = tuple(_rule_text(mesh, i) for i, r in enumerate(tables.access) if r.service == denied)
    return Access(True, False, reason, _denied(listener), others)


def _denied(listener: Listener) -> str:
    """What a request the rules deny gets: 403, or on an audit listener, through anyway."""
    if listener.access == "audit":
        return (
            f"{FORWARDED} (listener {listener.name} only audits: the denial is logged and "
            'counted in meshgen_denied_total{mode="audit"})'
        )
    return DENIED


def explain_request(
    mesh: Mesh, tables: Tables, request: Request, listener_name: str | None = None
) -> Trace:
    """The runtime's decisions for ``request`` on a listener, with the reasons and origins."""
    listener = _listener(mesh, tables, request, listener_name)
    lst_model = next(x for x in mesh.listeners if x.name == listener.name)
    enforced = enforced_on(listener)
    checks = "checks client certificates: access rules " + (
        "are audited, not enforced" if listener.access == "audit" else "apply"
    )
    note = f"{listener.host}:{listener.port}, " + (
        checks if enforced else "no client certificates: access rules do not apply"
    )
    base = Trace(
        request,
        request.host,
        None,
        listener.name,
        None if lst_model.synthetic else where(mesh, lst_model.path),
        note,
    )
    split = split_target(request.target)
    if split is None:
        return replace(base, outcome="400: the request target is not valid")
    path = split[0]
    router = Router.for_listener(tables.routes, listener)
    chosen = router.match(request.host, path, request.method, request.header)
    candidates = router.candidates(request.host)
    tries: list[RouteTry] = []
    seen = False
    for cr in router.routes:
        name = cr.route.name
        if seen:
            tries.append(RouteTry(name, _route_where(mesh, name), (), tried=False))
            continue
        failed = _failed(cr, candidates, request, path)
        tries.append(RouteTry(name, _route_where(mesh, name), failed))
        seen = cr is chosen
    trace = replace(base, path=path, routes=tuple(tries))
    if chosen is None:
        return replace(trace, outcome=f"404: no route for host {request.host!r}")
    route = chosen.route
    model_route = next(r for r in mesh.routes if r.name == route.name)
    trace = replace(
        trace,
        route=route.name,
        route_where=_route_where(mesh, route.name),
        route_policy=tuple(route_settings(mesh, tables, model_route)),
    )
    if route.redirect is not None:
        outcome = f"{route.redirect.status} redirect to {route.redirect.location} (before access)"
        return replace(trace, outcome=outcome)
    total = sum(t.weight for t in route.to)
    branches = tuple(_branch(mesh, tables, route.name, i, total) for i in range(len(route.to)))
    mirror = None
    if route.mirror is not None:
        copy = route.mirror
        mirror = f"{copy.percent:g}% copied to {target_name(copy.service, copy.subset)}"
    access = _access(mesh, tables, listener, route.name, request, path)
    return replace(trace, branches=branches, mirror=mirror, access=access, outcome=access.outcome)
