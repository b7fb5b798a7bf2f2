"""What the Envoy target cannot express (``DIST/envoy/GAPS.txt``; docs/envoy.md).

The renderer's approximations are decided in :mod:`.envoy_clusters` and :mod:`.envoy_routes`
(which split target's policy a route carries, which regexes RE2 runs, which retry budget a
cluster carries); this module asks those same functions, so the two never disagree.
Differences that hold for every mesh (Envoy's route timeout also bounds the response body,
endpoints wait for their first health check) are in docs/envoy.md, not here.
"""

from __future__ import annotations

from meshgen.protocols import HTTP2_PROTOCOLS
from meshgen.runtime.tables import (
    Cluster,
    DnsDiscovery,
    Limits,
    Listener,
    RetryPolicy,
    Route,
    Tables,
)

from .envoy_clusters import SYSTEM_CA, expected_names, retry_budgets, subset_clusters
from .envoy_routes import expressible, live, policy, policy_target
from .gaps import Gap

SRV = (
    "Envoy has no SRV discovery: the cluster has no endpoints (503); use `type: A` with a "
    "port, or give the cluster endpoints from a control plane (EDS)"
)
TTL = "a record's TTL does not shorten the refresh (dns_refresh_rate)"
SYSTEM_STORE = f"Envoy has no system trust store: {SYSTEM_CA} (Debian, Ubuntu) is used"
ANY_NAME = "each endpoint's certificate may carry any endpoint's name (one SAN list per cluster)"
ZONES = (
    "a zone below the panic threshold keeps its healthy share of the traffic (Envoy "
    "priorities spill gradually); the runtime moves all of it to the next zone, and with "
    "`backup` Envoy may send part of a degraded service's traffic to the backup"
)
BUDGET = (
    "Envoy's retry budget limits retries in flight to `ratio` of the requests in flight (at "
    "least `min_per_second` of them), not retries per request over 10 s"
)
EJECTION = "Envoy takes a whole percent: max_ejection_percent is rounded down"
REGEX = "Python regex syntax that RE2 lacks: the route is left out of Envoy (never matches)"
SPLIT = "its destinations' timeout, idle_timeout or retries differ"
SPLIT = "its destinations' timeout, idle_timeout or retries differ"
URL = "Envoy has no separate URL limit: the URL counts in the request head's limit"
GRPC_CHECK = (
    "Envoy asks grpc.health.v1 over the cluster's protocol, which is not HTTP/2 here: a TCP "
    "connect to the probed port instead"
)
GRPC_ANSWERS = (
    "Envoy answers a gRPC request it timed out (its 504) with UNAVAILABLE, not "
    "DEADLINE_EXCEEDED (the runtime's); its error_rate and SLO rules count HTTP 5xx only "
    "(its cluster counters carry no grpc-status)"
)
SNI_LIMIT = (
    "Envoy's connection_limit counts per filter chain: each server name pattern may have "
    "max_connections connections"
)
TCP_SPLIT = (
    "one tcp_proxy has one idle_timeout and one max_connect_attempts: the largest of its "
    "services' applies to every connection"
)
HEAD = "Envoy counts the head in KiB: the limit is rounded up to a whole KiB"
SUBSETS = (
    "each subset a route names is an Envoy cluster of its own (<service>~<subset>): "
    "circuit_breaker limits, the retry budget, outlier ejections and a service rate_limit "
    "count per subset's cluster, not per service"
)
SUBSET_BACKUP = (
    "a subset with no healthy endpoint fails over to the backup even while the service's "
    "other subsets are healthy (the runtime answers 503)"
)


def subset_routed(tables: Tables, clusters: dict[str, Cluster]) -> set[str]:
    """Services that a route or tcp listener sends to one of their subsets' clusters."""
    targets = [(t.service, t.subset) for r in tables.routes for t in live(r)]
    targets += [(t.service, t.subset) for lst in tables.listeners for t in lst.to if t.weight]
    return {s for s, subset in targets if subset in subset_clusters(clusters[s])}


def service_gaps(
    c: Cluster, tables: Tables, budgets: dict[str, RetryPolicy], split: set[str]
) -> list[Gap]:
    out: list[Gap] = []
    d = c.discovery
    if isinstance(d, DnsDiscovery):
        out.append(Gap("service", c.name, "discovery.dns", SRV if d.record_type == "SRV" else TTL))
    ct = tables.client_tls.get(c.name)
    if ct is not None and ct.verify:
        if ct.ca is None:
            out.append(Gap("service", c.name, "tls.ca", SYSTEM_STORE))
        if len(expected_names(c, tables)[1]) > 1 and not ct.subject_alt_names:
            out.append(Gap("service", c.name, "tls", ANY_NAME))
    if c.failover.zones:
        out.append(Gap("service", c.name, "failover.zones", ZONES))
    if c.name in budgets:
        out.append(Gap("service", c.name, "retries.budget", BUDGET))
    check = tables.health_checks.get(c.name)
    if check is not None and check.kind == "grpc" and c.protocol not in HTTP2_PROTOCOLS:
        out.append(Gap("service", c.name, "health_check.grpc", GRPC_CHECK))
    if c.protocol == "grpc":
        out.append(Gap("service", c.name, "protocol", GRPC_ANSWERS))
    od = tables.outlier_detection.get(c.name)
    if od is not None and od.max_ejection_percent != int(od.max_ejection_percent):
        out.append(Gap("service", c.name, "outlier_detection.max_ejection_percent", EJECTION))
    if c.name in split:
        out.append(Gap("service", c.name, "subsets", SUBSETS))
        if c.failover.backup:
            out.append(Gap("service", c.name, "failover.backup", SUBSET_BACKUP))
    return out


def route_gaps(
    r: Route, clusters: dict[str, Cluster], budgets: dict[str, RetryPolicy]
) -> list[Gap]:
    if not expressible(r):
        return [Gap("route", r.name, "match", REGEX)]
    out: list[Gap] = []
    chosen = policy_target(r)
    if chosen is not None and any(policy(t) != policy(chosen) for t in live(r)):
        split = f"{SPLIT}: Envoy applies service '{chosen.service}''s to the whole route"
        out.append(Gap("route", r.name, "to", split))
    for t in live(r):
        budget = budgets.get(t.service)
        if t.retries is not None and budget is not None and _budget(t.retries) != _budget(budget):
            own = f"not a pool of its own: service '{t.service}''s circuit breaker budget applies"
            out.append(Gap("route", r.name, "retries.budget", own))
            break
    return out


def _budget(p: RetryPolicy) -> tuple[float, float]:
    return (p.budget_ratio, p.budget_min_per_second)


def listener_gaps(lst: Listener, clusters: dict[str, Cluster]) -> list[Gap]:
    if lst.protocol == "tcp":
        live = [t for t in lst.to if t.weight > 0]
        seen = {(c.idle_timeout_s, c.retries.attempts if c.retries else 0)
                for c in (clusters[t.service] for t in live)}  # fmt: skip
        tcp = [Gap("listener", lst.name, "to", TCP_SPLIT)] if len(seen) > 1 else []
        if len(lst.sni) > 1:
            tcp.append(Gap("listener", lst.name, "limits.max_connections", SNI_LIMIT))
        return tcp
    out: list[Gap] = []
    limits, default = lst.limits, Limits()
    if limits.url_bytes != default.url_bytes:
        out.append(Gap("listener", lst.name, "limits.url_bytes", URL))
    if limits.request_head_bytes % 1024:
        out.append(Gap("listener", lst.name, "limits.request_head_bytes", HEAD))
    return out


def gaps(tables: Tables) -> list[Gap]:
    """Every field of ``tables`` that envoy.json does not express exactly."""
    clusters = {c.name: c for c in tables.clusters}
    budgets = retry_budgets(tables)
    split = subset_routed(tables, clusters)
    out = [g for c in tables.clusters for g in service_gaps(c, tables, budgets, split)]
    out += [g for r in tables.routes for g in route_gaps(r, clusters, budgets)]
    out += [g for lst in tables.listeners for g in listener_gaps(lst, clusters)]
    return out
