"""E801-E811, W801: what each protocol admits (services, listeners, routes, rules, alerts).

A tcp service carries bytes, not requests: the HTTP-only fields of :mod:`meshgen.protocols`
are errors when the service sets them itself (inherited from ``defaults:`` they were left out
by lowering), routes and mirrors may not send to it, and only tcp listeners forward to it. A
tcp listener forwards to exactly one of ``to`` (weighted) and ``sni`` (by TLS server name,
never terminating TLS, so not with ``tls``); an http listener has neither. Balancing hashes a
connection on nothing but its source address; a health check must speak what the probed
port speaks; a failover backup speaks what its service speaks. Access rules for a tcp service
judge the caller's identity only (no methods or paths), and alerts and SLOs on request
signals can never see a tcp service's traffic (its metrics are meshgen_tcp_*).

W801: a listener limit that has no effect on the listener's protocol (the HTTP limits of a
tcp listener, ``max_connection_duration`` of an http one).
"""

from __future__ import annotations

from meshgen.checks.context import Context
from meshgen.checks.monitoring import TRAFFIC_SIGNALS
from meshgen.model import Listener, PathKey, Service
from meshgen.protocols import TCP_HTTP_ONLY, limit_applies, probe_needs_port

HTTP_ONLY = "E801"
ROUTE_TO_TCP = "E802"
LISTENER_FIELD = "E803"
TO_OR_SNI = "E804"
SNI_WITH_TLS = "E805"
NOT_TCP = "E806"
HASH_ON = "E807"
PROBE_PORT = "E808"
BACKUP_PROTOCOL = "E809"
RULE_NOT_IDENTITY = "E810"
TRAFFIC_ALERT = "E811"
NO_EFFECT = "W801"


def check(ctx: Context) -> None:
    for service in ctx.mesh.services.values():
        _service(ctx, service)
    _routes(ctx)
    for listener in ctx.mesh.listeners:
        _listener(ctx, listener)
    _rules(ctx)


def _tcp(ctx: Context, name: str) -> bool:
    service = ctx.mesh.services.get(name)
    return service is not None and service.protocol == "tcp"


def _service(ctx: Context, service: Service) -> None:
    tcp = service.protocol == "tcp"
    if tcp:
        _http_only(ctx, service)
        hash_on = service.origin("load_balancer.hash_on")
        lb = service.load_balancer
        if hash_on.kind != "built-in" and (lb.hash_header or lb.hash_cookie):
            ctx.error(
                HASH_ON,
                f"tcp service '{service.name}' hashes on a "
                + ("header" if lb.hash_header else "cookie")
                + ": a connection has neither",
                hash_on.path,
                "a tcp connection is hashed on its source address: hash_on: {source_ip: true}",
                key=True,
            )
    check = service.health_check
    if check is not None and check.port is None and probe_needs_port(service.protocol, check.kind):
        where = service.origin(f"health_check.{check.kind}")
        ctx.error(
            PROBE_PORT,
            f"{check.kind} health check of {service.protocol} service '{service.name}' probes "
            f"the port traffic goes to, which does not speak {check.kind}",
            where.path or service.path,
            "set health_check.port to the endpoints' health port, or use "
            + ("tcp: {}" if tcp else "http or tcp"),
            key=bool(where.path),
        )
    backup = ctx.mesh.services.get(service.failover.backup or "")
    if backup is not None and (backup.protocol == "tcp") != tcp:
        ctx.error(
            BACKUP_PROTOCOL,
            f"{service.protocol} service '{service.name}' fails over to {backup.protocol} "
            f"service '{backup.name}'",
            (*service.failover.path, "backup"),
            "a backup takes the same traffic: tcp services back up tcp services, HTTP "
            "services HTTP services",
        )


def _http_only(ctx: Context, service: Service) -> None:
    """E801: each HTTP-only field the tcp service writes itself, at its outermost key."""
    reported: list[str] = []
    for dotted in TCP_HTTP_ONLY:
        origin = service.origin(dotted)
        if origin.kind != "service" or any(dotted.startswith(r + ".") for r in reported):
            continue
        reported.append(dotted)
        ctx.error(
            HTTP_ONLY,
            f"{dotted} does not apply to tcp service '{service.name}'",
            origin.path,
            "a tcp service forwards connections, not requests: of its policy only "
            "connect_timeout, idle_timeout, retries.attempts, circuit_breaker.max_connections, "
            "load balancing, health checks, outlier detection, failover and tls apply",
            key=True,
        )


def _routes(ctx: Context) -> None:
    for route in ctx.mesh.routes:
        for dest in route.to:
            if _tcp(ctx, dest.service):
                ctx.error(
                    ROUTE_TO_TCP,
                    f"route '{route.name}' sends HTTP requests to tcp service '{dest.service}'",
                    (*dest.path, "service"),
                    "a tcp service is reached through a listener with protocol: tcp and "
                    f"to: [{{service: {dest.service}}}]",
                )
        mirror = route.mirror
        if mirror is not None and _tcp(ctx, mirror.service):
            ctx.error(
                ROUTE_TO_TCP,
                f"route '{route.name}' mirrors HTTP requests to tcp service '{mirror.service}'",
                (*mirror.path, "service"),
                "only HTTP services can receive mirrored requests",
            )


def _listener(ctx: Context, listener: Listener) -> None:
    if listener.synthetic:
        return
    path = listener.path
    data = ctx.doc.data["listeners"][path[1]]
    tcp = listener.protocol == "tcp"
    for field in ("routes",) if tcp else ("to", "sni"):
        if field in data:
            hint = (
                "a tcp listener forwards connections to 'to' or by 'sni'; routes are HTTP"
                if tcp
                else "set protocol: tcp to forward connections; an http listener serves routes"
            )
            ctx.error(
                LISTENER_FIELD,
                f"'{field}' does not apply to {listener.protocol} listener '{listener.name}'",
                (*path, field),
                hint,
                key=True,
            )
    _limits(ctx, listener, data.get("limits") or {})
    if not tcp:
        return
    if ("to" in data) == ("sni" in data):
        both = "to" in data
        ctx.error(
            TO_OR_SNI,
            f"tcp listener '{listener.name}' has "
            + ("both 'to' and 'sni'" if both else "neither 'to' nor 'sni'"),
            (*path, "sni") if both else (*path, "name"),
            "forward every connection with to: [{service: NAME}], or route TLS connections "
            "by server name with sni: {NAME.example: SERVICE}",
            key=both,
        )
    if listener.sni and listener.tls is not None:
        ctx.error(
            SNI_WITH_TLS,
            f"tcp listener '{listener.name}' routes by sni and also terminates tls",
            (*path, "tls"),
            "sni passes TLS through to the service untouched (it reads only the server name); "
            "remove tls, or terminate here and forward with to:",
            key=True,
        )
    targets = [(d.service, (*d.path, "service")) for d in listener.to]
    targets += [(e.service, e.path) for e in listener.sni]
    for name, where in targets:
        service = ctx.mesh.services.get(name)
        if service is not None and service.protocol != "tcp":
            ctx.error(
                NOT_TCP,
                f"tcp listener '{listener.name}' forwards connections to {service.protocol} "
                f"service '{name}'",
                where,
                f"set protocol: tcp on service '{name}' (its HTTP policy would not apply), "
                "or serve it from an http listener",
            )


def _limits(ctx: Context, listener: Listener, written: dict[str, object]) -> None:
    """W801: each limit written that the listener's protocol does not use."""
    for limit in written:
        if limit_applies(listener.protocol, limit):
            continue
        ctx.warning(
            NO_EFFECT,
            f"limits.{limit} has no effect on {listener.protocol} listener '{listener.name}'",
            (*listener.path, "limits", limit),
            "a tcp listener uses max_connections and max_connection_duration; an http "
            "listener every other limit",
            key=True,
        )


def _rules(ctx: Context) -> None:
    """E810 and E811: access rules and alerts that cannot judge a tcp service."""
    for rule in ctx.mesh.access:
        if not _tcp(ctx, rule.service):
            continue
        for field in ("methods", "paths"):
            if getattr(rule, field):
                ctx.error(
                    RULE_NOT_IDENTITY,
                    f"access rule from '{rule.source}' limits {field} of tcp service "
                    f"'{rule.service}'",
                    (*rule.path, field),
                    "a connection has no method or path: rules for a tcp service allow a "
                    "caller by identity alone",
                    key=True,
                )
    watched: list[tuple[str, str, PathKey]] = [
        (f"alert '{a.name}' on {a.expr.signal}", a.service, a.path)
        for a in ctx.mesh.alerts
        if a.expr is not None and a.expr.signal in TRAFFIC_SIGNALS
    ]
    watched += [(f"SLO '{s.name}'", s.service, s.path) for s in ctx.mesh.slos]
    for what, name, path in watched:
        if _tcp(ctx, name):
            ctx.error(
                TRAFFIC_ALERT,
                f"{what} watches tcp service '{name}', which has no requests",
                (*path, "service"),
                "request signals come from meshgen_requests_total; a tcp service can alert "
                "on healthy_endpoints, healthy_ratio or cert_expiry",
            )
