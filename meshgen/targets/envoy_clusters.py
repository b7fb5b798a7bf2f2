"""Envoy clusters: one per service and one per subset, plus failover aggregates for backup
chains and one cluster per mirrored subset.

Theory of operation (docs/envoy.md has the table):

* **Discovery**: static endpoints that are all IP literals -> ``STATIC``; one endpoint named by
  a host name -> ``LOGICAL_DNS`` (one endpoint, connect to what the name resolves to, as the
  runtime does); several with a name among them -> ``STRICT_DNS`` (every address of each name
  is an endpoint). ``dns: A|AAAA`` -> ``STRICT_DNS`` on the name, refreshed every
  ``max(1s, refresh)``. ``dns: SRV`` has no Envoy cluster type: an empty ``STATIC`` cluster
  (503) and a gap (:mod:`.envoy_gaps`).
* **Subsets**: each subset with labels is a cluster of its own, ``<service>~<subset>``
  (:func:`subset_name`), holding the endpoints it selects, with the service's health check,
  outlier detection, circuit breakers and TLS; a route to the subset names that cluster (a
  subset with no healthy endpoint is a 503). Not Envoy's subset load balancer: its retries
  ignore the ``previous_hosts`` predicate, so a retry could reach the endpoint that just
  failed. A route without a subset uses the service's cluster, every endpoint.
* **Zones**: priority *i* holds the endpoints of ``failover.zones[i]``, the last priority the
  rest. A priority keeps all traffic while its healthy share is at least the panic threshold
  (``overprovisioning_factor`` = 100/threshold); below it Envoy spills the missing share to
  the next priority (the runtime moves all of it). ``healthy_panic_threshold`` 0: Envoy never
  sends to unhealthy endpoints, as the runtime. A service without zones keeps all traffic
  while any endpoint is healthy (:data:`KEEP_ALL`), so a backup only gets traffic when none is.
* **Backup**: an ``envoy.clusters.aggregate`` cluster ``<service>_failover`` over the service
  and its backup chain (cycles cut), and ``<service>~<subset>_failover`` over the subset's
  cluster and the same chain; routes to a service with a backup use them.
* Health checks, outlier detection, circuit breakers (and the retry budget), TLS to the
  endpoints map field by field; a ``grpc`` health check is Envoy's ``grpc_health_check``.
* ``http2`` and ``grpc`` services get ``explicit_http_config.http2_protocol_options`` in
  ``typed_extension_protocol_options`` (:func:`protocol_options`): pooled, multiplexed HTTP/2
  connections, as the runtime's, with its windows (:data:`UPSTREAM_HTTP2`).
* **Buffers**: every cluster and listener has ``per_connection_buffer_limit_bytes``
  :data:`BUFFER_LIMIT`, what Envoy holds for a connection (and an HTTP/2 stream) before it
  stops reading its peer. Envoy's default (1 MiB) with its default HTTP/2 windows (256 MiB) let
  one client whose 100 streams read nothing make it hold every response whole (830 MiB for
  100 of 8 MiB, ``bench/h2_dribble.py --outbound --dribble none``).
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterator

from meshgen.ip_literals import is_dotted_quad
from meshgen.protocols import HTTP2_PROTOCOLS
from meshgen.runtime.policy.tls import TLS12_CIPHERS
from meshgen.runtime.tables import (
    Cluster,
    DnsDiscovery,
    Endpoint,
    HealthCheck,
    OutlierDetection,
    RetryPolicy,
    Tables,
)

from .envoy_syntax import Json, duration, resource, socket_address, typed

KEEP_ALL = 100_000
"""``overprovisioning_factor`` (percent) that keeps all traffic on a priority while any of its
endpoints is healthy (one healthy endpoint in 1,000 is 100%)."""
MAX_EJECTION_TIME_S = 24 * 86400  # the runtime never caps base_ejection_time x times ejected
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
"""Envoy has no system trust store: ``tls.ca`` absent means this file (Debian/Ubuntu)."""
LB_POLICIES = {
    "round_robin": "ROUND_ROBIN",
    "random": "RANDOM",
    "least_request": "LEAST_REQUEST",
    "ring_hash": "RING_HASH",
    "maglev": "MAGLEV",
}
TLS_VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}
CIPHERS = [x for x in TLS12_CIPHERS.split(":") if not x.startswith("DHE-")]
"""The runtime's TLS 1.2 suites that BoringSSL has (it has no finite-field DHE)."""
SUBSET_SEPARATOR = "~"


def failover_name(service: str) -> str:
    """``<service>_failover``: ``_`` never occurs in a service name, and a ``.`` would split
    the name in Envoy's Prometheus labels (``envoy_cluster_name`` stops at the first dot)."""
    return f"{service}_failover"


def subset_name(service: str, subset: str) -> str:
    """``<service>~<subset>``: ``~`` occurs in no service or subset name (nor in the other
    generated names, which add ``_``), and it stays in ``envoy_cluster_name``."""
    return f"{service}{SUBSET_SEPARATOR}{subset}"


def subset_clusters(c: Cluster) -> list[str]:
    """The subsets of ``c`` that get a cluster: those with labels (one without selects every
    endpoint, the service's own cluster)."""
    return [s.name for s in c.subsets if s.labels]


def mirror_name(service: str, subset: str) -> str:
    return f"{service}_{subset}_mirror"


def backup_chain(c: Cluster, clusters: dict[str, Cluster]) -> list[str]:
    """The service and its backups in order, stopping before a repeat (cycles are errors)."""
    chain: list[str] = []
    name: str | None = c.name
    while name is not None and name not in chain and name in clusters:
        chain.append(name)
        name = clusters[name].failover.backup
    return chain


def routed_name(service: str, subset: str | None, clusters: dict[str, Cluster]) -> str:
    """The cluster a route target sends its traffic to: the subset's or the service's, or
    that one's failover aggregate when the service has a backup."""
    c = clusters[service]
    name = subset_name(service, subset) if subset in subset_clusters(c) else service
    return failover_name(name) if c.failover.backup else name


def is_ip(host: str) -> bool:
    """An IPv4 or IPv6 literal (an IPv4 one by a regex: 10,000 services have 40,000 hosts)."""
    if ":" not in host:
        return is_dotted_quad(host)
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def cluster_type(c: Cluster) -> str:
    d = c.discovery
    if isinstance(d, DnsDiscovery):
        return "STATIC" if d.record_type == "SRV" else "STRICT_DNS"
    if all(is_ip(e.host) for e in d.endpoints):
        return "STATIC"
    return "LOGICAL_DNS" if len(d.endpoints) == 1 else "STRICT_DNS"


def _endpoint(e: Endpoint, probe_port: int | None = None) -> Json:
    out: Json = {"endpoint": {"address": socket_address(e.host, e.port)}}
    if probe_port is not None:  # health_check.port
        out["endpoint"]["health_check_config"] = {"port_value": probe_port}
    if e.weight != 1:
        out["load_balancing_weight"] = e.weight
    return out


def priorities(c: Cluster, endpoints: tuple[Endpoint, ...]) -> list[list[Endpoint]]:
    """Endpoints per priority: one per zone of ``failover.zones`` that has any, then the rest."""
    zones = c.failover.zones
    levels = [[e for e in endpoints if e.zone == z] for z in zones]
    levels.append([e for e in endpoints if e.zone not in zones])
    return [level for level in levels if level]


def overprovisioning(c: Cluster) -> int:
    """Percent: a priority keeps all traffic while its healthy share >= the panic threshold."""
    threshold = c.failover.panic_threshold
    if not c.failover.zones or threshold <= 0:
        return KEEP_ALL
    return min(KEEP_ALL, max(100, round(100 * 100 / threshold)))


def load_assignment(
    name: str, c: Cluster, endpoints: tuple[Endpoint, ...] | None, probe_port: int | None = None
) -> Json:
    d = c.discovery
    if isinstance(d, DnsDiscovery):
        eps = [] if d.record_type == "SRV" else [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(d.query_name, d.port or 0)}}]}]  # fmt: skip
        return {"cluster_name": name, "endpoints": eps}
    levels = priorities(c, d.endpoints if endpoints is None else endpoints)
    groups: list[Json] = []
    for p, level in enumerate(levels):
        group: Json = {"lb_endpoints": [_endpoint(e, probe_port) for e in level]}
        if p:
            group["priority"] = p
        groups.append(group)
    return {
        "cluster_name": name,
        "endpoints": groups,
        "policy": {"overprovisioning_factor": overprovisioning(c)},
    }


def health_check(hc: HealthCheck, http2: bool) -> Json:
    """A ``grpc`` check needs HTTP/2 endpoints (``http2``); elsewhere it is a TCP connect (a
    gap, :mod:`.envoy_gaps`)."""
    out: Json = {
        "timeout": duration(hc.timeout_s),
        "interval": duration(hc.interval_s),
        "no_traffic_interval": duration(hc.interval_s),
        "healthy_threshold": hc.healthy_threshold,
        "unhealthy_threshold": hc.unhealthy_threshold,
    }
    if hc.kind == "http":
        statuses = [{"start": s, "end": s + 1} for s in hc.expected_statuses]
        out["http_health_check"] = {"path": hc.path, "expected_statuses": statuses}
    elif hc.kind == "grpc" and http2:
        out["grpc_health_check"] = {"service_name": hc.grpc_service} if hc.grpc_service else {}
    else:
        out["tcp_health_check"] = {}
    return out


def outlier_detection(od: OutlierDetection) -> Json:
    return {
        "consecutive_5xx": od.consecutive_5xx,
        "enforcing_consecutive_5xx": 100,
        "enforcing_success_rate": 0,
        "enforcing_consecutive_gateway_failure": 0,
        "interval": duration(od.interval_s),
        "base_ejection_time": duration(od.base_ejection_time_s),
        "max_ejection_time": duration(MAX_EJECTION_TIME_S),
        "max_ejection_percent": math.floor(od.max_ejection_percent),
        "always_eject_one_host": True,  # as the runtime: one endpoint, whatever the percent
    }


def circuit_breakers(c: Cluster, budget: RetryPolicy | None) -> Json:
    cb = c.circuit_breaker
    threshold: Json = {
        "priority": "DEFAULT",
        "max_connections": cb.max_connections,
        "max_pending_requests": cb.max_pending_requests,
        "max_requests": cb.max_requests,
    }
    if budget is not None:
        threshold["retry_budget"] = {
            "budget_percent": {"value": budget.budget_ratio * 100},
            "min_retry_concurrency": max(1, math.ceil(budget.budget_min_per_second)),
        }
    return {"thresholds": [threshold]}


def tls_params(min_version: str) -> Json:
    return {"tls_minimum_protocol_version": TLS_VERSIONS[min_version], "cipher_suites": CIPHERS}


def san_matchers(names: tuple[str, ...] | list[str]) -> list[Json]:
    out = []
    for n in names:
        kind = "URI" if "://" in n else ("IP_ADDRESS" if is_ip(n) else "DNS")
        out.append({"san_type": kind, "matcher": {"exact": n}})
    return out


def expected_names(c: Cluster, tables: Tables) -> tuple[str | None, list[str]]:
    """(SNI, identities to accept), as the runtime checks them: the configured SANs, else the
    SNI name, else the endpoint's host (any endpoint's, when there are several)."""
    ct = tables.client_tls[c.name]
    d = c.discovery
    hosts = [d.query_name] if isinstance(d, DnsDiscovery) else [e.host for e in d.endpoints]
    sni = ct.sni
    if sni is None and len(hosts) == 1 and not is_ip(hosts[0]):
        sni = hosts[0]
    if ct.subject_alt_names:
        return sni, list(ct.subject_alt_names)
    return sni, [ct.sni] if ct.sni else list(dict.fromkeys(hosts))


def upstream_tls(c: Cluster, tables: Tables) -> Json | None:
    ct = tables.client_tls.get(c.name)
    if ct is None or ct.mode == "disable":
        return None
    common: Json = {"tls_params": tls_params(ct.min_version)}
    if ct.mode == "mutual" and ct.cert and ct.key:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": ct.cert}, "private_key": {"filename": ct.key}}
        ]
    sni, names = expected_names(c, tables)
    if ct.verify:
        common["validation_context"] = {
            "trusted_ca": {"filename": ct.ca or SYSTEM_CA},
            "match_typed_subject_alt_names": san_matchers(names),
        }
    context: Json = {"common_tls_context": common}
    if sni is not None:
        context["sni"] = sni
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", context
        ),
    }


def probe_port(c: Cluster, tables: Tables) -> int | None:
    """``health_check.port``: each endpoint's ``health_check_config`` names it."""
    hc = tables.health_checks.get(c.name)
    return hc.port if hc is not None else None


HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
BUFFER_LIMIT = 64 * 1024
"""Bytes Envoy buffers a connection or stream: the runtime's ``http1.REPLAY_LIMIT`` (a request
body up to it is kept for a retry, on both) and ``forward.tcp.HIGH_WATER`` (a tcp listener's
buffer each way); tests/unit/test_targets_envoy.py holds them equal."""
UPSTREAM_HTTP2 = {
    "initial_stream_window_size": 256 * 1024,
    "initial_connection_window_size": 16 << 20,
}
"""The windows the runtime's HTTP/2 client announces (``codec.h2_client``'s ``STREAM_WINDOW``
and ``CONNECTION_WINDOW``; the same test holds them equal)."""


def protocol_options(c: Cluster) -> Json:
    """``typed_extension_protocol_options`` for the endpoints' protocol: none for HTTP/1.1
    (Envoy's default), HTTP/2 for ``http2`` and ``grpc`` services."""
    if c.protocol not in HTTP2_PROTOCOLS:
        return {}
    http2 = {"http2_protocol_options": UPSTREAM_HTTP2}
    options = typed(HTTP_OPTIONS, {"explicit_http_config": http2})
    return {"typed_extension_protocol_options": {HTTP_OPTIONS: options}}


def service_cluster(
    c: Cluster,
    tables: Tables,
    budget: RetryPolicy | None,
    name: str | None = None,
    endpoints: tuple[Endpoint, ...] | None = None,
) -> Json:
    """The cluster of service ``c`` (or, with ``name`` and ``endpoints``, of a subset of it)."""
    kind = cluster_type(c)
    out: Json = {
        "name": name or c.name,
        "connect_timeout": duration(c.connect_timeout_s),
        "lb_policy": LB_POLICIES[c.load_balancer.policy],
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "load_assignment": load_assignment(name or c.name, c, endpoints, probe_port(c, tables)),
        "circuit_breakers": circuit_breakers(c, budget),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
    }
    if c.load_balancer.policy == "least_request":
        out["least_request_lb_config"] = {"choice_count": c.load_balancer.choice_count}
    if kind == "STATIC":
        out["type"] = kind
    else:
        out["cluster_type"] = dns_cluster(c, kind)
    hc = tables.health_checks.get(c.name)
    if hc is not None:
        out["health_checks"] = [health_check(hc, c.protocol in HTTP2_PROTOCOLS)]
    od = tables.outlier_detection.get(c.name)
    if od is not None:
        out["outlier_detection"] = outlier_detection(od)
    tls = upstream_tls(c, tables)
    if tls is not None:
        out["transport_socket"] = tls
    out.update(protocol_options(c))
    return out


def dns_cluster(c: Cluster, kind: str) -> Json:
    """The ``envoy.cluster.dns`` extension: strict (every address an endpoint) or logical."""
    config: Json = {
        "all_addresses_in_single_endpoint": kind == "LOGICAL_DNS",
        "dns_lookup_family": lookup_family(c),
    }
    if isinstance(c.discovery, DnsDiscovery):
        config["dns_refresh_rate"] = duration(max(1.0, c.discovery.refresh_s))
    return {
        "name": "envoy.cluster.dns",
        "typed_config": typed("envoy.extensions.clusters.dns.v3.DnsCluster", config),
    }


def lookup_family(c: Cluster) -> str:
    """``dns: A`` / ``AAAA`` ask for that record only; host names of static endpoints prefer
    IPv4 and fall back to IPv6, as a plain connect to the name does."""
    d = c.discovery
    if isinstance(d, DnsDiscovery):
        return "V6_ONLY" if d.record_type == "AAAA" else "V4_ONLY"
    return "V4_PREFERRED"


def failover_cluster(c: Cluster, clusters: dict[str, Cluster], first: str | None = None) -> Json:
    """``<first>_failover``: the service's cluster (or ``first``, one of its subsets'), then
    its backup chain (Envoy's aggregate)."""
    chain = backup_chain(c, clusters)
    chain[0] = first or chain[0]
    config = typed("envoy.extensions.clusters.aggregate.v3.ClusterConfig", {"clusters": chain})
    return {
        "name": failover_name(chain[0]),
        "connect_timeout": duration(c.connect_timeout_s),
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": config},
    }


def retry_budgets(tables: Tables) -> dict[str, RetryPolicy]:
    """Per service, the retry policy whose budget its circuit breaker carries: the service's
    own, else the first route target's that retries to it (other budgets: a gap)."""
    out = {  # a tcp service's retries are connect attempts (tcp_proxy), with no budget
        c.name: c.retries for c in tables.clusters if c.retries is not None and c.protocol != "tcp"
    }
    for r in tables.routes:
        for t in r.to:
            if t.retries is not None:
                out.setdefault(t.service, t.retries)
    return out


def members(c: Cluster, subset: str) -> tuple[Endpoint, ...]:
    """The endpoints ``subset`` selects (the runtime's ``upstreams.subset_members``, which
    a build does not import: the runtime's upstream layer costs ~0.1 s to import)."""
    d = c.discovery
    assert not isinstance(d, DnsDiscovery), "subsets need static endpoints (checks enforce it)"
    labels = next((set(s.labels) for s in c.subsets if s.name == subset), set())
    return tuple(e for e in d.endpoints if labels <= set(e.labels))


def with_subsets(c: Cluster, tables: Tables, budget: RetryPolicy | None) -> Iterator[str]:
    """The service's cluster, then each subset's (``<service>~<subset>``: the same cluster over
    the subset's endpoints), encoded. Only ``load_assignment`` and ``name`` differ, adjacent
    in key order: the fields before and after them are encoded once and each cluster's own
    two spliced between, the text :func:`.envoy_syntax.resource` gives for each whole cluster
    (at 10,000 services with two subsets each, encoding all three whole was ~1 s)."""
    shared = service_cluster(c, tables, budget)
    assignment, name = shared.pop("load_assignment"), shared.pop("name")
    assert not [k for k in shared if "load_assignment" < k < "name"], "a key between them"
    head = resource({k: v for k, v in shared.items() if k < "load_assignment"})[1:-1]
    tail = resource({k: v for k, v in shared.items() if k > "name"})[1:-1]

    def line(assignment: Json, name: str) -> str:
        own = f'"load_assignment":{resource(assignment)},"name":{json.dumps(name)}'
        return "{" + ",".join(part for part in (head, own, tail) if part) + "}"

    yield line(assignment, name)
    port = probe_port(c, tables)
    for subset in subset_clusters(c):
        name = subset_name(c.name, subset)
        yield line(load_assignment(name, c, members(c, subset), port), name)


def clusters(tables: Tables) -> Iterator[str]:
    """Every cluster, encoded (:func:`.envoy_syntax.resource`): services (name order), each
    followed by its subsets (in file order), failover aggregates, then mirrored subsets.

    Built and encoded one at a time, each dropped before the next is built: at 10,000
    services all of them at once were ~700 MB of short-lived dicts (page faults and system
    time), for a JSON text of 23 MiB.
    """
    by_name = {c.name: c for c in tables.clusters}
    budgets = retry_budgets(tables)
    for c in tables.clusters:
        yield from with_subsets(c, tables, budgets.get(c.name))
    for c in tables.clusters:
        if c.failover.backup:
            yield resource(failover_cluster(c, by_name))
            for subset in subset_clusters(c):
                yield resource(failover_cluster(c, by_name, subset_name(c.name, subset)))
    mirrored = sorted({(r.mirror.service, r.mirror.subset) for r in tables.routes
                       if r.mirror is not None and r.mirror.subset})  # fmt: skip
    for service, subset in mirrored:
        assert subset is not None
        c = by_name[service]
        cluster = service_cluster(c, tables, None, mirror_name(service, subset), members(c, subset))
        yield resource(cluster)
