"""Lowering of ``services:``: discovery, subsets and merged service policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from meshgen import builtin
from meshgen.lower.context import LowerContext, pairs, version_text
from meshgen.lower.merge import POLICY_FIELDS, Merged, OriginMap, copy_nested, drop, overlay
from meshgen.model import (
    BUILT_IN,
    CallPolicy,
    CircuitBreaker,
    DnsDiscovery,
    Endpoint,
    Failover,
    Gap,
    HealthCheck,
    LoadBalancer,
    OutlierDetection,
    PathKey,
    RateLimit,
    Retries,
    Service,
    StaticDiscovery,
    Subset,
    TlsPolicy,
)
from meshgen.protocols import TCP_NOT_INHERITED, TCP_RETRY_ON

if TYPE_CHECKING:
    from meshgen.runtime.tables import DnsRecordType, HealthCheckKind, ServiceProtocol

_default = builtin.default


def services(ctx: LowerContext) -> dict[str, Service]:
    """Every service, sorted by name, with its effective policy (built-in < defaults < service)."""
    raw_services = ctx.data.get("services") or {}
    skip = ctx.skip
    return {
        n: service(ctx, n, raw_services[n] or {})
        for n in sorted(raw_services)
        if ("services", n) not in skip
    }


def service(ctx: LowerContext, name: str, raw: Merged) -> Service:
    path: PathKey = ("services", name)
    merged = dict(ctx.defaults)
    copy_nested(merged)
    origins = dict(ctx.default_origins)
    own: Merged = {k: raw[k] for k in POLICY_FIELDS if k in raw}
    overlay(merged, origins, own, ctx.origin("service"), path)
    protocol = cast("ServiceProtocol", raw.get("protocol", _default("service.protocol")))
    if protocol == "tcp":
        tcp_inherits(merged, origins)
    return Service(
        name=name,
        path=path,
        discovery=discovery(ctx, raw.get("discovery") or {}, (*path, "discovery")),
        subsets=tuple(
            Subset(n, pairs((s or {}).get("labels")), (*path, "subsets", n))
            for n, s in sorted((raw.get("subsets") or {}).items())
        ),
        load_balancer=load_balancer_of(merged.get("load_balancer") or {}),
        health_check=health_check(ctx, name, merged, origins),
        outlier_detection=outlier(ctx, merged, origins),
        circuit_breaker=circuit_breaker(merged.get("circuit_breaker") or {}),
        connect_timeout_s=ctx.timed(merged, origins, "connect_timeout"),
        call=call_policy(ctx, merged, origins, protocol == "tcp"),
        rate_limit=service_rate_limit(ctx, name, merged.get("rate_limit")),
        failover=failover(raw.get("failover") or {}, (*path, "failover")),
        tls=client_tls(merged.get("tls") or {}),
        origins=origins,
        protocol=protocol,
    )


def tcp_inherits(merged: Merged, origins: OriginMap) -> None:
    """Leave out what a tcp service cannot use of ``defaults:`` (meshgen.protocols): the
    HTTP-only fields, ``idle_timeout``, hashing on a header or cookie, and an http or grpc
    probe of the traffic port, which becomes a tcp connect on the same schedule."""

    def inherited(dotted: str) -> bool:
        return origins.get(dotted, BUILT_IN).kind == "defaults"

    for dotted in TCP_NOT_INHERITED:
        if inherited(dotted):
            drop(merged, origins, dotted)
    hash_on = (merged.get("load_balancer") or {}).get("hash_on") or {}
    if "source_ip" not in hash_on and inherited("load_balancer.hash_on"):
        drop(merged, origins, "load_balancer.hash_on")
    check = merged.get("health_check")
    if check is None or "port" in check:
        return
    for kind in ("http", "grpc"):
        if kind in check and inherited(f"health_check.{kind}"):
            drop(merged, origins, f"health_check.{kind}")
            check["tcp"] = {}


def discovery(ctx: LowerContext, raw: Merged, path: PathKey) -> StaticDiscovery | DnsDiscovery:
    if "dns" in raw:
        dns = raw["dns"]
        name = str(dns.get("name", path[1])).lower().rstrip(".")
        fqdn = name if "." in name or not ctx.domain else f"{name}.{ctx.domain}"
        kind = cast("DnsRecordType", dns.get("type", _default("service.discovery.dns.type")))
        query = f"_http._tcp.{fqdn}" if kind == "SRV" and not fqdn.startswith("_") else fqdn
        refresh = builtin.seconds("service.discovery.dns.refresh")
        if "refresh" in dns:
            refresh = ctx.duration(dns["refresh"], (*path, "dns", "refresh"), refresh)
        return DnsDiscovery(name, query, kind, dns.get("port"), refresh, (*path, "dns"))
    endpoints = []
    weight = _default("service.discovery.static.weight")
    for index, item in enumerate(raw.get("static") or ()):
        where = (*path, "static", index)
        host, port = ctx.address(item["address"], (*where, "address"), "endpoint", False)
        endpoints.append(
            Endpoint(
                host,
                port,
                int(item.get("weight", weight)),
                item.get("zone"),
                pairs(item.get("labels")),
                where,
            )
        )
    return StaticDiscovery(tuple(endpoints), (*path, "static"))


def service_rate_limit(ctx: LowerContext, name: str, raw: Merged | None) -> RateLimit | None:
    """The merged bucket; a ``defaults:`` one is complete, so a gap is the service's own."""
    ctx.rate_limits[name] = raw
    if raw is not None and "requests_per_second" not in raw:
        where = ("services", name, "rate_limit")
        ctx.gaps.append(
            Gap(f"service '{name}'", "rate_limit", "requests_per_second", where, "in defaults")
        )
        return None
    return rate_limit(raw)


def health_check(
    ctx: LowerContext, name: str, merged: Merged, origins: OriginMap
) -> HealthCheck | None:
    raw = merged.get("health_check")
    if raw is None:
        return None
    kinds: tuple[HealthCheckKind, ...] = ("http", "tcp", "grpc")
    kind = next((k for k in kinds if k in raw), None)
    if kind is None:
        where = ("services", name, "health_check")
        ctx.gaps.append(
            Gap(f"service '{name}'", "health_check", "http, tcp or grpc", where, "in defaults")
        )
        return None
    http_raw = raw.get("http") or {}
    grpc_raw = raw.get("grpc") or {}
    return HealthCheck(
        kind=kind,
        path=str(http_raw.get("path", _default("service.health_check.http.path"))),
        expected_statuses=tuple(
            http_raw.get(
                "expected_statuses", _default("service.health_check.http.expected_statuses")
            )
        ),
        grpc_service=str(grpc_raw.get("service", _default("service.health_check.grpc.service"))),
        port=raw.get("port"),
        interval_s=ctx.timed(merged, origins, "health_check.interval"),
        timeout_s=ctx.timed(merged, origins, "health_check.timeout"),
        healthy_threshold=int(
            raw.get("healthy_threshold", _default("service.health_check.healthy_threshold"))
        ),
        unhealthy_threshold=int(
            raw.get("unhealthy_threshold", _default("service.health_check.unhealthy_threshold"))
        ),
    )


def outlier(ctx: LowerContext, merged: Merged, origins: OriginMap) -> OutlierDetection | None:
    raw = merged.get("outlier_detection")
    if raw is None:
        return None
    return OutlierDetection(
        consecutive_5xx=int(
            raw.get("consecutive_5xx", _default("service.outlier_detection.consecutive_5xx"))
        ),
        interval_s=ctx.timed(merged, origins, "outlier_detection.interval"),
        base_ejection_time_s=ctx.timed(merged, origins, "outlier_detection.base_ejection_time"),
        max_ejection_percent=float(
            raw.get(
                "max_ejection_percent", _default("service.outlier_detection.max_ejection_percent")
            )
        ),
    )


def circuit_breaker(raw: Merged) -> CircuitBreaker:
    return CircuitBreaker(
        **{
            key: int(raw.get(key, _default(f"service.circuit_breaker.{key}")))
            for key in ("max_connections", "max_pending_requests", "max_requests")
        }
    )


def call_policy(
    ctx: LowerContext, merged: Merged, origins: OriginMap, tcp: bool = False
) -> CallPolicy:
    """Timeouts and retries; a tcp service's retries are connect attempts, and its idle
    timeout falls back to the tcp built-in (``defaults:`` was left out by tcp_inherits)."""
    retries = merged.get("retries")
    policy = None
    if retries is not None:
        budget = retries.get("budget") or {}
        per_try = retries.get("per_try_timeout")
        policy = Retries(
            attempts=int(retries.get("attempts", _default("service.retries.attempts"))),
            per_try_timeout_s=None
            if per_try is None
            else ctx.duration(per_try, origins["retries.per_try_timeout"].path),
            on=TCP_RETRY_ON if tcp else tuple(retries.get("on", _default("service.retries.on"))),
            backoff_base_s=ctx.timed(merged, origins, "retries.backoff.base"),
            backoff_max_s=ctx.timed(merged, origins, "retries.backoff.max"),
            budget_ratio=float(budget.get("ratio", _default("service.retries.budget.ratio"))),
            budget_min_per_second=float(
                budget.get("min_per_second", _default("service.retries.budget.min_per_second"))
            ),
            idempotent_only=bool(
                retries.get("idempotent_only", _default("service.retries.idempotent_only"))
            ),
        )
    return CallPolicy(
        timeout_s=ctx.timed(merged, origins, "timeout"),
        idle_timeout_s=ctx.timed(merged, origins, "idle_timeout")
        if not tcp or "idle_timeout" in merged
        else builtin.seconds("tcp_service.idle_timeout"),
        retries=policy,
        origins=origins,
    )


def failover(raw: Merged, path: PathKey) -> Failover:
    return Failover(
        tuple(str(z) for z in raw.get("zones", ())),
        float(raw.get("panic_threshold", _default("service.failover.panic_threshold"))),
        raw.get("backup"),
        path,
    )


def client_tls(raw: Merged) -> TlsPolicy:
    return TlsPolicy(
        mode=raw.get("mode", _default("service.tls.mode")),
        ca=raw.get("ca"),
        cert=raw.get("cert"),
        key=raw.get("key"),
        sni=raw.get("sni"),
        subject_alt_names=tuple(raw.get("subject_alt_names", ())),
        min_version=version_text(raw.get("min_version", _default("service.tls.min_version"))),
        verify=bool(raw.get("verify", _default("service.tls.verify"))),
        insecure=bool(raw.get("insecure", _default("service.tls.insecure"))),
    )


def load_balancer_of(raw: Merged) -> LoadBalancer:
    hash_on = raw.get("hash_on") or {}
    header = hash_on.get("header")
    return LoadBalancer(
        policy=raw.get("policy", _default("service.load_balancer.policy")),
        choice_count=int(raw.get("choice_count", _default("service.load_balancer.choice_count"))),
        hash_header=None if header is None else str(header).lower(),
        hash_cookie=hash_on.get("cookie"),
        hash_source_ip=bool(hash_on.get("source_ip", False)),
    )


def rate_limit(raw: Merged | None) -> RateLimit | None:
    """A token bucket; ``burst`` defaults to one second's worth of requests (at least 1)."""
    if raw is None:
        return None
    rate = float(raw["requests_per_second"])
    return RateLimit(rate, int(raw.get("burst", max(1, round(rate)))))
