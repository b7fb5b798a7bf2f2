"""Typed mesh -> runtime :class:`Tables`: every ordering decision of the build lives here.

Ordering rules (the output must not depend on the key order of mesh.yaml's mappings):
clusters sorted by service name; subsets by name; a tcp listener's ``sni`` entries by
pattern; endpoints, routes, listeners (and a tcp listener's ``to``), access rules,
alerts and SLOs in file order (they are YAML lists; synthetic default routes come sorted by
service); ``health_checks``, ``outlier_detection`` and ``client_tls`` are dicts built in
service-name order and hold only the services that have one (TLS: mode other than
``disable``); label and header mappings become sorted tuples in :mod:`meshgen.lower`.

The model's plain values (load balancer, health check, match, ...) mirror their table types
field for field, so each becomes its table value by unpacking (``t.LoadBalancer(*value)``).

Values are effective: ``per_try_timeout`` defaults to the timeout that applies where the retry
policy is used (the service's on a Cluster, the route-merged one on a Target); a retry policy
with ``attempts: 0`` is no retry policy.
"""

from __future__ import annotations

from typing import Final

from meshgen.model import (
    CallPolicy,
    DnsDiscovery,
    Listener,
    Match,
    Mesh,
    RateLimit,
    Retries,
    Route,
    Service,
    Slo,
)
from meshgen.runtime import tables as t

# (budget share %, long window s, short window s); Google SRE workbook / Sloth defaults for 30d.
PAGE_WINDOWS: Final = ((2, 3600, 300), (5, 21600, 1800))
TICKET_WINDOWS: Final = ((10, 86400, 7200), (10, 259200, 21600))


def burn_windows(
    window_s: float, spec: tuple[tuple[int, int, int], ...]
) -> tuple[t.BurnWindow, ...]:
    """Multi-window burn-rate thresholds for an SLO window, as Sloth computes them.

    ``factor = budget_share x W / long_window``: the burn rate at which ``budget_share`` of the
    error budget of a window ``W`` is spent within ``long_window``. For W = 30d this gives
    14.4 (2% in 1h), 6 (5% in 6h), 3 (10% in 1d) and 1 (10% in 3d). The arithmetic is exact
    (fractions) and rounded once, so 30d reproduces those numbers bit for bit.
    """
    from fractions import Fraction  # imported here: ``validate`` never plans an SLO

    window = Fraction(window_s)
    return tuple(
        t.BurnWindow(float(long_s), float(short_s), float(Fraction(share, 100) * window / long_s))
        for share, long_s, short_s in spec
    )


def retry_policy(
    retries: Retries | None, timeout_s: float, budget_route: str | None = None
) -> t.RetryPolicy | None:
    if retries is None or retries.attempts <= 0:
        return None
    per_try = retries.per_try_timeout_s
    return t.RetryPolicy(
        attempts=retries.attempts,
        per_try_timeout_s=timeout_s if per_try is None else per_try,
        on=tuple(retries.on),  # type: ignore[arg-type]  # schema enum == RetryCondition
        backoff_base_s=retries.backoff_base_s,
        backoff_max_s=retries.backoff_max_s,
        budget_ratio=retries.budget_ratio,
        budget_min_per_second=retries.budget_min_per_second,
        idempotent_only=retries.idempotent_only,
        budget_route=budget_route,
    )


def cluster(service: Service) -> t.Cluster:
    discovery: t.StaticDiscovery | t.DnsDiscovery
    if isinstance(service.discovery, DnsDiscovery):
        dns = service.discovery
        discovery = t.DnsDiscovery(dns.query_name, dns.record_type, dns.port, dns.refresh_s)
    else:
        discovery = t.StaticDiscovery(
            tuple(
                t.Endpoint(e.host, e.port, e.weight, e.zone, e.labels)
                for e in service.discovery.endpoints
            )
        )
    call = service.call
    return t.Cluster(
        name=service.name,
        discovery=discovery,
        protocol=service.protocol,
        subsets=tuple(t.Subset(s.name, s.labels) for s in service.subsets),
        load_balancer=t.LoadBalancer(*service.load_balancer),
        circuit_breaker=t.CircuitBreaker(*service.circuit_breaker),
        connect_timeout_s=service.connect_timeout_s,
        timeout_s=call.timeout_s,
        idle_timeout_s=call.idle_timeout_s,
        retries=retry_policy(call.retries, call.timeout_s),
        rate_limit=rate_limit(service.rate_limit),
        failover=t.Failover(
            service.failover.zones, service.failover.panic_threshold, service.failover.backup
        ),
    )


def rate_limit(value: RateLimit | None) -> t.RateLimit | None:
    return None if value is None else t.RateLimit(*value)


def match(value: Match) -> t.Match:
    headers = tuple(t.HeaderMatch(*header) for header in value.headers)
    return t.Match(value.hosts, value.path_kind, value.path, value.methods, headers)


def _target(
    route_name: str, service: str, subset: str | None, weight: int, call: CallPolicy
) -> t.Target:
    """One destination; a route that wrote its own ``retries.budget`` gets its own pool."""
    own_budget = call.origin("retries.budget").kind == "route"
    return t.Target(
        service=service,
        subset=subset,
        weight=weight,
        timeout_s=call.timeout_s,
        idle_timeout_s=call.idle_timeout_s,
        retries=retry_policy(call.retries, call.timeout_s, route_name if own_budget else None),
    )


def route(item: Route) -> t.Route:
    single = len(item.to) == 1
    targets = []
    for dest in item.to:
        assert dest.call is not None, "checks reject routes to unknown services"
        weight = dest.weight if dest.weight is not None else (100 if single else 0)
        targets.append(_target(item.name, dest.service, dest.subset, weight, dest.call))
    mirror, fault, rewrite, redirect = item.mirror, item.fault, item.rewrite, item.redirect
    return t.Route(
        name=item.name,
        match=match(item.match),
        to=tuple(targets),
        rate_limit=rate_limit(item.rate_limit),
        fault=None if fault is None else t.Fault(*fault),
        mirror=None if mirror is None else t.Mirror(mirror.service, mirror.subset, mirror.percent),
        rewrite=None if rewrite is None else t.Rewrite(*rewrite),
        request_headers=t.HeaderOps(*item.request_headers),
        response_headers=t.HeaderOps(*item.response_headers),
        redirect=None if redirect is None else t.Redirect(*redirect),
    )


def listener(mesh: Mesh, item: Listener, order: dict[str, int]) -> t.Listener:
    """A listener with the routes it serves in route-table order (a tcp one: none)."""
    single = len(item.to) == 1
    return t.Listener(
        name=item.name,
        host=item.host,
        port=item.port,
        routes=tuple(sorted(set(mesh.listener_routes(item)), key=order.__getitem__)),
        tls=None if item.tls is None else t.ServerTls(*item.tls),
        limits=t.Limits(*item.limits),
        access=item.access,
        protocol=item.protocol,
        to=tuple(
            t.TcpTarget(d.service, d.subset, d.weight if d.weight is not None else 100 * single)
            for d in item.to
        ),
        sni=tuple(
            sorted((t.SniRoute(e.pattern, e.service) for e in item.sni), key=lambda r: r.pattern)
        ),
    )


def client_tls(service: Service) -> t.ClientTls:
    tls = service.tls
    return t.ClientTls(
        mode=tls.mode,
        ca=tls.ca,
        cert=tls.cert,
        key=tls.key,
        sni=tls.sni,
        subject_alt_names=tls.subject_alt_names,
        min_version=tls.min_version,
        verify=tls.verify,
    )


def slo(item: Slo) -> t.Slo:
    return t.Slo(
        name=item.name,
        service=item.service,
        objective=item.objective,
        window_s=item.window_s,
        page=burn_windows(item.window_s, PAGE_WINDOWS),
        ticket=burn_windows(item.window_s, TICKET_WINDOWS),
    )


def to_tables(mesh: Mesh) -> t.Tables:
    """The runtime tables of a mesh that passed every check (no unknown references)."""
    services = [mesh.services[name] for name in sorted(mesh.services)]
    order = {r.name: i for i, r in enumerate(mesh.routes)}
    return t.Tables(
        mesh=t.MeshInfo(
            name=mesh.name,
            domain=mesh.domain,
            admin_host=mesh.admin_host,
            admin_port=mesh.admin_port,
            alertmanager=mesh.alertmanager,
        ),
        clusters=tuple(cluster(s) for s in services),
        routes=tuple(route(r) for r in mesh.routes),
        listeners=tuple(listener(mesh, item, order) for item in mesh.listeners),
        health_checks={
            s.name: t.HealthCheck(*s.health_check) for s in services if s.health_check is not None
        },
        outlier_detection={
            s.name: t.OutlierDetection(*s.outlier_detection)
            for s in services
            if s.outlier_detection is not None
        },
        client_tls={s.name: client_tls(s) for s in services if s.tls.mode != "disable"},
        access=tuple(
            t.AccessRule(rule.source, rule.service, rule.methods, rule.paths)
            for rule in mesh.access
        ),
        alerts=tuple(
            t.Alert(
                a.name,
                a.service,
                a.expr.signal,
                a.expr.op,
                a.expr.threshold,
                a.for_s,
                a.severity,
                a.summary,
            )
            for a in mesh.alerts
            if a.expr is not None
        ),
        slos=tuple(slo(s) for s in mesh.slos),
    )
