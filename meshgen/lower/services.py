"""Lowering of ``services:``: discovery, subsets and merged service policy."""

from __future__ import annotations

from typing import cast

from meshgen.lower.base import (
    DEFAULT_RETRY_ON,
    POLICY_FIELDS,
    LowererBase,
    Merged,
    OriginMap,
    copy_nested,
    overlay,
    pairs,
    version_text,
)
from meshgen.model import (
    CallPolicy,
    DnsDiscovery,
    Endpoint,
    Failover,
    Gap,
    PathKey,
    Retries,
    Service,
    StaticDiscovery,
    Subset,
    TlsPolicy,
)
from meshgen.runtime import tables as t


class ServiceLowering(LowererBase):
    """Services and their effective policy (built-in < defaults < service)."""

    def service(self, name: str, raw: Merged) -> Service:
        path: PathKey = ("services", name)
        merged = dict(self.defaults)
        copy_nested(merged)
        origins = dict(self.default_origins)
        overlay(merged, origins, {k: raw[k] for k in POLICY_FIELDS if k in raw}, "service", path)
        return Service(
            name=name,
            path=path,
            discovery=self.discovery(raw.get("discovery") or {}, (*path, "discovery")),
            subsets=tuple(
                Subset(n, pairs((s or {}).get("labels")), (*path, "subsets", n))
                for n, s in sorted((raw.get("subsets") or {}).items())
            ),
            load_balancer=load_balancer_of(merged.get("load_balancer") or {}),
            health_check=self.health_check(name, merged, origins),
            outlier_detection=self.outlier(merged, origins),
            circuit_breaker=t.CircuitBreaker(**(merged.get("circuit_breaker") or {})),
            connect_timeout_s=self.timed(merged, origins, "connect_timeout", 5.0),
            call=self.call_policy(merged, origins),
            rate_limit=self.service_rate_limit(name, merged.get("rate_limit")),
            failover=self.failover(raw.get("failover") or {}, (*path, "failover")),
            tls=self.client_tls(merged.get("tls") or {}),
            origins=origins,
        )

    def discovery(self, raw: Merged, path: PathKey) -> StaticDiscovery | DnsDiscovery:
        if "dns" in raw:
            dns = raw["dns"]
            name = str(dns.get("name", path[1])).lower().rstrip(".")
            fqdn = name if "." in name or not self.domain else f"{name}.{self.domain}"
            kind = cast(t.DnsRecordType, dns.get("type", "SRV"))
            query = f"_http._tcp.{fqdn}" if kind == "SRV" and not fqdn.startswith("_") else fqdn
            refresh = self.duration(dns.get("refresh", "30s"), (*path, "dns", "refresh"), 30.0)
            return DnsDiscovery(name, query, kind, dns.get("port"), refresh, (*path, "dns"))
        endpoints = []
        for index, item in enumerate(raw.get("static") or ()):
            where = (*path, "static", index)
            host, port = self.address(item["address"], (*where, "address"), "endpoint", False)
            endpoints.append(
                Endpoint(
                    host,
                    port,
                    int(item.get("weight", 1)),
                    item.get("zone"),
                    pairs(item.get("labels")),
                    where,
                )
            )
        return StaticDiscovery(tuple(endpoints), (*path, "static"))

    def service_rate_limit(self, name: str, raw: Merged | None) -> t.RateLimit | None:
        """The merged bucket; a ``defaults:`` one is complete, so a gap is the service's own."""
        self.rate_limits[name] = raw
        if raw is not None and "requests_per_second" not in raw:
            where = ("services", name, "rate_limit")
            self.gaps.append(
                Gap(f"service '{name}'", "rate_limit", "requests_per_second", where, "in defaults")
            )
            return None
        return rate_limit(raw)

    def health_check(self, name: str, merged: Merged, origins: OriginMap) -> t.HealthCheck | None:
        raw = merged.get("health_check")
        if raw is None:
            return None
        http = raw.get("http")
        if http is None and "tcp" not in raw:
            where = ("services", name, "health_check")
            self.gaps.append(
                Gap(f"service '{name}'", "health_check", "http or tcp", where, "in defaults")
            )
            return None
        return t.HealthCheck(
            kind="tcp" if http is None else "http",
            path=str((http or {}).get("path", "/")),
            expected_statuses=tuple((http or {}).get("expected_statuses", (200,))),
            interval_s=self.timed(merged, origins, "health_check.interval", 5.0),
            timeout_s=self.timed(merged, origins, "health_check.timeout", 1.0),
            healthy_threshold=int(raw.get("healthy_threshold", 2)),
            unhealthy_threshold=int(raw.get("unhealthy_threshold", 3)),
        )

    def outlier(self, merged: Merged, origins: OriginMap) -> t.OutlierDetection | None:
        raw = merged.get("outlier_detection")
        if raw is None:
            return None
        return t.OutlierDetection(
            consecutive_5xx=int(raw.get("consecutive_5xx", 5)),
            interval_s=self.timed(merged, origins, "outlier_detection.interval", 10.0),
            base_ejection_time_s=self.timed(
                merged, origins, "outlier_detection.base_ejection_time", 30.0
            ),
            max_ejection_percent=float(raw.get("max_ejection_percent", 10.0)),
        )

    def call_policy(self, merged: Merged, origins: OriginMap) -> CallPolicy:
        retries = merged.get("retries")
        policy = None
        if retries is not None:
            budget = retries.get("budget") or {}
            per_try = retries.get("per_try_timeout")
            policy = Retries(
                attempts=int(retries.get("attempts", 1)),
                per_try_timeout_s=None
                if per_try is None
                else self.timed(merged, origins, "retries.per_try_timeout", 0.0),
                on=tuple(retries.get("on", DEFAULT_RETRY_ON)),
                backoff_base_s=self.timed(merged, origins, "retries.backoff.base", 0.025),
                backoff_max_s=self.timed(merged, origins, "retries.backoff.max", 0.25),
                budget_ratio=float(budget.get("ratio", 0.2)),
                budget_min_per_second=float(budget.get("min_per_second", 10)),
                idempotent_only=bool(retries.get("idempotent_only", True)),
            )
        return CallPolicy(
            timeout_s=self.timed(merged, origins, "timeout", 15.0),
            idle_timeout_s=self.timed(merged, origins, "idle_timeout", 60.0),
            retries=policy,
            origins=origins,
        )

    def failover(self, raw: Merged, path: PathKey) -> Failover:
        return Failover(
            tuple(str(z) for z in raw.get("zones", ())),
            float(raw.get("panic_threshold", 50.0)),
            raw.get("backup"),
            path,
        )

    def client_tls(self, raw: Merged) -> TlsPolicy:
        return TlsPolicy(
            mode=raw.get("mode", "disable"),
            ca=raw.get("ca"),
            cert=raw.get("cert"),
            key=raw.get("key"),
            sni=raw.get("sni"),
            subject_alt_names=tuple(raw.get("subject_alt_names", ())),
            min_version=version_text(raw.get("min_version", "1.2")),
            verify=bool(raw.get("verify", True)),
            insecure=bool(raw.get("insecure", False)),
        )


def load_balancer_of(raw: Merged) -> t.LoadBalancer:
    hash_on = raw.get("hash_on") or {}
    header = hash_on.get("header")
    return t.LoadBalancer(
        policy=raw.get("policy", "round_robin"),
        choice_count=int(raw.get("choice_count", 2)),
        hash_header=None if header is None else str(header).lower(),
        hash_cookie=hash_on.get("cookie"),
        hash_source_ip=bool(hash_on.get("source_ip", False)),
    )


def rate_limit(raw: Merged | None) -> t.RateLimit | None:
    """A token bucket; ``burst`` defaults to one second's worth of requests (at least 1)."""
    if raw is None:
        return None
    rate = float(raw["requests_per_second"])
    return t.RateLimit(rate, int(raw.get("burst", max(1, round(rate)))))
