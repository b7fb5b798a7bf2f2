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

A tcp listener forwards connections, not requests, so there the trace is the tcp forwarder's
decisions: access by identity (:meth:`~meshgen.runtime.policy.access.AccessPolicy.connection_denial`
over :func:`~meshgen.runtime.policy.access.listener_services`), then the ``to`` destinations by
weight, or the service :class:`~meshgen.runtime.policy.sni.SniRouter` picks for the server
name (the request's host stands for it). Why a pattern matched is each pattern alone through
the same SniRouter, in :func:`~meshgen.runtime.policy.sni.precedence` order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from meshgen.model import Mesh
from meshgen.protocols import TCP_HTTP_ONLY
from meshgen.review.effective import (
    Setting,
    destination_settings,
    route_settings,
    service_settings,
    where,
)
from meshgen.runtime.app.table_view import target_name
from meshgen.runtime.codec.paths import split_target, target_authority, valid_host
from meshgen.runtime.policy.access import (
    AccessPolicy,
    Grant,
    enforced_on,
    listener_services,
    rule_grants,
)
from meshgen.runtime.policy.router import CompiledRoute, Router, normalize_host
from meshgen.runtime.policy.sni import SniRouter, precedence
from meshgen.runtime.tables import Listener, StaticDiscovery, Tables, Target
from meshgen.runtime.upstream.health import failover_select
from meshgen.runtime.upstream.upstreams import subset_members

FORWARDED = "forwarded to the split below"
DENIED = "403: access denied"
TCP_FORWARDED = "forwarded: each connection to one destination below, drawn by weight"
CONNECTION_DENIED = "connection closed: access denied (counted in meshgen_denied_total)"
SNI_NO_MATCH = "connection closed: no sni pattern matches (counted as sni_no_match)"


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
class SniTry:
    """One ``sni`` pattern of a tcp listener, in the order the runtime tries them."""

    pattern: str
    service: str
    where: str | None
    matched: bool
    tried: bool = True  # False: an earlier pattern matched first


@dataclass(frozen=True)
class Branch:
    """One destination of the chosen route's split and what the runtime will use for it."""

    service: str
    subset: str | None
    weight: int | None  # None: chosen by the TLS server name (a tcp listener's sni)
    share: float  # percent of the route's requests (of the tcp listener's connections)
    where: str | None
    subset_labels: str | None
    endpoints: tuple[str, ...]  # what the subset selects (address, zone)
    preferred: tuple[str, ...]  # with failover zones: those used while every endpoint is up
    discovery: str | None  # DNS: resolved at run time
    backups: tuple[str, ...]  # the failover backup chain
    policy: tuple[Setting, ...]  # per-request policy of this destination
    service_policy: tuple[Setting, ...]  # the service's other settings
    carries: str = "requests"  # or "connections": a tcp service


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
    """``protocol`` is the listener's: ``http`` routes requests (``routes``), ``tcp`` forwards
    connections (``branches`` by weight, or by ``server_name`` through ``sni``)."""

    request: Request
    host: str
    path: str | None  # normalised; None: the target is invalid (400), or a tcp listener
    listener: str
    listener_where: str | None
    listener_note: str
    protocol: str = "http"
    server_name: str | None = None  # a tcp listener with sni: the request's host stands for it
    sni: tuple[SniTry, ...] = ()
    routes: tuple[RouteTry, ...] = ()
    route: str | None = None
    route_where: str | None = None
    outcome: str = ""
    branches: tuple[Branch, ...] = ()
    mirror: str | None = None
    route_policy: tuple[Setting, ...] = ()
    access: Access | None = None


def _listener(tables: Tables, request: Request, name: str | None) -> tuple[Listener, str]:
    """``--listener``, else the first listener whose routes match the request (with ``--from``,
    first among those that check client certificates), else the first http listener; a tcp
    listener only when the mesh has no http listener. Also says why, when it is not obvious."""
    if name is not None:
        found = next((x for x in tables.listeners if x.name == name), None)
        if found is None:
            known = ", ".join(x.name for x in tables.listeners)
            raise RequestError(f"--listener {name!r}: no such listener (listeners: {known})")
        return found, ""
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
    if matching:
        return matching[0], ""
    http = [x for x in tables.listeners if x.protocol == "http"]
    if http:
        return http[0], ""
    return tables.listeners[0], (
        "; chosen as the mesh has no http listener (pick one with --listener)"
    )


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
    if not cr.path_matches(path):
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
    """Destination ``index`` of a route's split, with its per-request policy."""
    route = next(r for r in mesh.routes if r.name == route_name)
    target: Target = next(r for r in tables.routes if r.name == route_name).to[index]
    dest = route.to[index] if index < len(route.to) else None
    return _destination(
        mesh,
        tables,
        target.service,
        target.subset,
        target.weight,
        100.0 * target.weight / total if total else 0.0,
        where(mesh, dest.path) if dest is not None and not route.synthetic else None,
        tuple(destination_settings(mesh, dest, target)) if dest is not None else (),
    )


def _destination(
    mesh: Mesh,
    tables: Tables,
    service: str,
    subset: str | None,
    weight: int | None,
    share: float,
    at: str | None,
    policy: tuple[Setting, ...],
) -> Branch:
    """What the runtime uses for one destination, a route's or a tcp listener's: the
    endpoints its subset selects, the failover backups and the service's settings (without
    those ``policy`` shows per request; for a tcp service, without the HTTP-only ones)."""
    cluster = next(c for c in tables.clusters if c.name == service)
    labels = None
    if subset is not None:
        chosen = next(s for s in cluster.subsets if s.name == subset)
        labels = ", ".join(f"{k}: {v}" for k, v in chosen.labels) or "(all endpoints)"
    endpoints: tuple[str, ...] = ()
    preferred: tuple[str, ...] = ()
    discovery = None
    if isinstance(cluster.discovery, StaticDiscovery):
        members = subset_members(cluster, cluster.discovery.endpoints, subset) or ()
        endpoints = tuple(_endpoint(e.address, e.zone) for e in members)
        fo = cluster.failover
        if fo.zones and members:
            picked = failover_select(members, lambda _: True, fo.zones, fo.panic_threshold)
            preferred = tuple(_endpoint(e.address, e.zone) for e in picked)
    else:
        dns = cluster.discovery
        discovery = f"DNS {dns.record_type} {dns.query_name}, resolved at run time"
    backups: list[str] = []
    backup = cluster.failover.backup
    while backup is not None and backup not in backups and backup != service:
        backups.append(backup)
        backup = next(c for c in tables.clusters if c.name == backup).failover.backup
    tcp = cluster.protocol == "tcp"
    hidden = TCP_HTTP_ONLY if tcp else ("timeout", "idle_timeout", "retries")
    rest = tuple(
        s
        for s in service_settings(mesh, tables, service)
        if not any(s.name == h or s.name.startswith(h + ".") for h in hidden)
    )
    return Branch(
        service,
        subset,
        weight,
        share,
        at,
        labels,
        endpoints,
        preferred,
        discovery,
        tuple(backups),
        policy,
        rest,
        "connections" if tcp else "requests",
    )


def _rule_text(mesh: Mesh, index: int, connection: bool = False) -> str:
    """A rule as written; one for a tcp service (``connection``) allows by identity only."""
    rule = mesh.access[index]
    text = f"{where(mesh, rule.path)}: from {rule.source} to {rule.service}"
    if connection:
        return text
    methods = ",".join(rule.methods) or "any method"
    paths = ",".join(rule.paths) or "any path"
    return f"{text} {methods} {paths}"


@dataclass(frozen=True)
class _Asked:
    """What access is asked about (a request on a route, or a connection to a tcp listener):
    the services it may reach, the runtime's verdict, and the words for it."""

    services: tuple[str, ...]
    denied: str | None  # None: allowed; else the service the runtime counts the denial under
    action: str | None  # "GET /x"; None: a connection (allowed by identity alone)
    permits: Callable[[Grant], bool]
    forwarded: str  # the outcome when allowed (or only audited)
    refused: str  # the outcome when denied


def _access(
    mesh: Mesh, tables: Tables, listener: Listener, route: str, request: Request, path: str
) -> Access:
    """A request on ``route``: :meth:`AccessPolicy.denial`'s verdict."""
    policy = AccessPolicy.from_tables(tables)
    asked = _Asked(
        policy.routes.get(route, ()),
        policy.denial(route, request.caller, request.method, path),
        f"{request.method} {path}",
        lambda g: g.permits(request.method, path),
        FORWARDED,
        DENIED,
    )
    return _verdict(mesh, tables, listener, request.caller, asked)


def _connection_access(
    mesh: Mesh, tables: Tables, listener: Listener, caller: str | None, forwarded: str
) -> Access:
    """A connection to a tcp listener: :meth:`AccessPolicy.connection_denial`'s verdict, by
    identity alone, for every service the listener can reach (backups included)."""
    services = listener_services(listener, {c.name: c for c in tables.clusters})
    policy = AccessPolicy.from_tables(tables)
    denied = policy.connection_denial(caller, services)
    asked = _Asked(services, denied, None, lambda _: True, forwarded, CONNECTION_DENIED)
    return _verdict(mesh, tables, listener, caller, asked)


def _verdict(
    mesh: Mesh, tables: Tables, listener: Listener, caller: str | None, asked: _Asked
) -> Access:
    """The verdict and the rules that decided it."""
    if not enforced_on(listener):
        reason = f"not checked on listener {listener.name} (no client certificates)"
        return Access(False, True, reason, asked.forwarded)
    if caller is None:
        assert listener.tls is not None
        if listener.tls.client_certificates == "required":
            reason = "no client certificate (client_certificates: required); give one with --from"
            return Access(True, False, reason, "refused: the TLS handshake fails")
        reason = "no client certificate, so no rule applies; give the caller with --from"
        return Access(True, False, reason, _denied(listener, asked))
    grants = [rule_grants(rule) for rule in tables.access]
    deciding: list[str] = []
    for service in asked.services:
        for i, rule in enumerate(tables.access):
            mine = rule.service == service and rule.source in (caller, "*")
            if mine and any(asked.permits(g) for g in grants[i]):
                deciding.append(_rule_text(mesh, i, asked.action is None))
                break
    action = "connect to" if asked.action is None else f"{asked.action} on"
    if asked.denied is None:
        reason = f"allowed: {caller} may {action} {', '.join(asked.services)}"
        return Access(True, True, reason, asked.forwarded, tuple(deciding))
    denied = asked.denied
    what = "to connect to" if asked.action is None else action
    reason = f"denied: no rule allows {caller} {what} {denied}"
    others = tuple(
        _rule_text(mesh, i, asked.action is None)
        for i, r in enumerate(tables.access)
        if r.service == denied
    )
    return Access(True, False, reason, _denied(listener, asked), others)


def _denied(listener: Listener, asked: _Asked) -> str:
    """What the rules deny gets: 403 (a connection: closed), or on an audit listener, through
    anyway."""
    if listener.access == "audit":
        return (
            f"{asked.forwarded} (listener {listener.name} only audits: the denial is logged and "
            'counted in meshgen_denied_total{mode="audit"})'
        )
    return asked.refused


def _connection(mesh: Mesh, tables: Tables, listener: Listener, trace: Trace) -> Trace:
    """A tcp listener forwards connections, not requests: to a ``to`` destination drawn by
    weight, or by the TLS server name (here: the request's host) through ``sni``."""
    lst_model = next(x for x in mesh.listeners if x.name == listener.name)
    caller = trace.request.caller
    trace = replace(trace, protocol="tcp")
    if not listener.sni:
        total = sum(t.weight for t in listener.to)
        branches = tuple(
            _destination(
                mesh,
                tables,
                t.service,
                t.subset,
                t.weight,
                100.0 * t.weight / total if total else 0.0,
                where(mesh, d.path),
                (),
            )
            for t, d in zip(listener.to, lst_model.to, strict=True)
        )
        access = _connection_access(mesh, tables, listener, caller, TCP_FORWARDED)
        return replace(trace, branches=branches, access=access, outcome=access.outcome)
    name = normalize_host(trace.request.host)
    service = SniRouter(listener.sni).route(name)  # the runtime's decision
    at = {e.pattern: where(mesh, e.path) for e in lst_model.sni}
    tries: list[SniTry] = []
    seen = False
    for r in precedence(listener.sni):  # why: each pattern alone, in the runtime's order
        if seen:
            tries.append(SniTry(r.pattern, r.service, at.get(r.pattern), False, tried=False))
            continue
        seen = SniRouter((r,)).route(name) is not None
        tries.append(SniTry(r.pattern, r.service, at.get(r.pattern), seen))
    passed = (
        f"passed through to {service}: bytes untouched, its endpoint completes the TLS handshake"
    )
    # access is decided as the connection is accepted, before the ClientHello is read
    outcome = SNI_NO_MATCH if service is None else passed
    access = _connection_access(mesh, tables, listener, caller, outcome)
    trace = replace(
        trace, server_name=name, sni=tuple(tries), access=access, outcome=access.outcome
    )
    if service is None:
        return trace
    pattern = next(t.pattern for t in tries if t.matched)
    branch = _destination(mesh, tables, service, None, None, 100.0, at.get(pattern), ())
    return replace(trace, branches=(branch,))


def explain_request(
    mesh: Mesh, tables: Tables, request: Request, listener_name: str | None = None
) -> Trace:
    """The runtime's decisions for ``request`` on a listener, with the reasons and origins."""
    listener, why = _listener(tables, request, listener_name)
    lst_model = next(x for x in mesh.listeners if x.name == listener.name)
    enforced = enforced_on(listener)
    checks = "checks client certificates: access rules " + (
        "are audited, not enforced" if listener.access == "audit" else "apply"
    )
    carries = ""
    if listener.protocol == "tcp":
        carries = "tcp: forwards connections" + (
            " by TLS server name (TLS passed through), " if listener.sni else " by weight, "
        )
    note = f"{listener.host}:{listener.port}, {carries}" + (
        checks if enforced else "no client certificates: access rules do not apply"
    )
    base = Trace(
        request,
        request.host,
        None,
        listener.name,
        None if lst_model.synthetic else where(mesh, lst_model.path),
        note + why,
    )
    if listener.protocol == "tcp":
        return _connection(mesh, tables, listener, base)
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
