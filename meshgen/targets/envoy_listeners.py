"""Envoy listeners: one per mesh listener, an HTTP connection manager with the route table.

Theory of operation (docs/envoy.md):

* Paths are normalised before routing as the runtime does (RFC 3986 dot-segments and
  percent-decoding of unreserved characters, ``//`` merged, ``%2F`` kept); the Host is
  matched without its port or trailing dot (virtual host domains are case-insensitive).
* HTTP filters, in the runtime's order of decisions: RBAC (403), the route's rate limit (429),
  fault, the services' rate limits (429, one bucket per service keyed on the routed cluster),
  then the router. Each filter is present only when a served route uses it.
* Listener limits: the head's byte and header-count limits, the head timeout (408), the
  keep-alive idle timeout, and a connection limit (connections beyond it are closed); the
  runtime's HTTP/2 limits (:data:`DOWNSTREAM_HTTP2`) and a buffer of
  :data:`~.envoy_clusters.BUFFER_LIMIT` a connection.
* A ``tcp`` listener is :mod:`.envoy_tcp`'s (``tcp_proxy``, ``tls_inspector``). An ``http``
  listener serves HTTP/1.1 and HTTP/2 on one port, as the runtime: ``codec_type`` AUTO (h2c
  with prior knowledge) and ALPN ``h2``, ``http/1.1`` with TLS.
"""

from __future__ import annotations

import heapq
import math

from meshgen.runtime.policy.access import enforced_on
from meshgen.runtime.tables import Cluster, Listener, Route, Tables

from . import envoy_tcp
from .envoy_access import OFF, AccessRules, ListenerAccess, audit_log
from .envoy_clusters import BUFFER_LIMIT, routed_name, tls_params
from .envoy_routes import (
    FAULT,
    LIMIT_TYPE,
    RBAC,
    ROUTE_LIMIT,
    SERVICE_LIMIT,
    RouteBuilder,
    catch_all_404,
    rate_limit,
)
from .envoy_syntax import Json, duration, socket_address, typed

HCM_TYPE = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
MAX_HEADERS_KB = 8192  # Envoy's largest max_request_headers_kb
DOWNSTREAM_HTTP2 = {
    "max_concurrent_streams": 100,
    "initial_stream_window_size": 65_535,
    "initial_connection_window_size": 16 << 20,
}
"""What the runtime's HTTP/2 server announces (``codec.h2_server``: ``MAX_CONCURRENT_STREAMS``,
h2's default stream window, ``CONNECTION_WINDOW``; tests/unit/test_targets_envoy.py holds them
equal). With Envoy's defaults (2,147,483,647 streams, 256 MiB windows) a client's unread
streams made it hold every response whole."""


def virtual_hosts(
    routes: list[Route], builder: RouteBuilder, access: ListenerAccess | None
) -> list[Json]:
    """One virtual host per host the routes name (its routes and the host-less ones, in file
    order), then ``*`` with the host-less ones alone. Built in one pass over the routes."""
    hostless: list[tuple[int, Route]] = []
    by_host: dict[str, list[tuple[int, Route]]] = {}
    for i, r in enumerate(routes):
        for h in r.match.hosts or (None,):
            (hostless if h is None else by_host.setdefault(h, [])).append((i, r))
    out = []
    for name, domain, own in [*((h, h, own) for h, own in by_host.items()), ("any", "*", [])]:
        merged = heapq.merge(own, hostless, key=lambda ir: ir[0]) if hostless else own
        entries, retries = hoist_retries([e for _, r in merged for e in builder.entries(r, access)])
        if access is not None:
            entries.append(catch_all_404(OFF))
        vhost: Json = {"name": name, "domains": [domain], "routes": entries}
        if retries is not None:
            vhost["retry_policy"] = retries
        out.append(vhost)
    return out


def hoist_retries(entries: list[Json]) -> tuple[list[Json], Json | None]:
    """When every forwarding entry has the same retry policy, the virtual host carries it once
    (Envoy applies a virtual host's policy to routes without their own; a 10,000-service
    mesh's config is ~10% smaller). Entries are copied, never changed: they are shared."""
    forwarding = [e["route"].get("retry_policy") for e in entries if "route" in e]
    if (
        len(forwarding) < 2
        or forwarding[0] is None
        or forwarding.count(forwarding[0]) < len(forwarding)
    ):
        return entries, None
    hoisted = [
        {**e, "route": {k: v for k, v in e["route"].items() if k != "retry_policy"}}
        if "route" in e
        else e
        for e in entries
    ]
    return hoisted, forwarding[0]


def http_filters(
    routes: list[Route], clusters: dict[str, Cluster], access: ListenerAccess | None
) -> list[Json]:
    """The filters the served routes need, in the runtime's order, the router last."""
    out: list[Json] = []
    if access is not None:
        out.append({"name": RBAC, "typed_config": access.listener_filter()})
    forwarding = [r for r in routes if r.redirect is None]
    if any(r.rate_limit for r in forwarding):
        out.append(
            {"name": ROUTE_LIMIT, "typed_config": typed(LIMIT_TYPE, {"stat_prefix": "route"})}
        )
    if any(r.fault for r in forwarding):
        fault = typed("envoy.extensions.filters.http.fault.v3.HTTPFault")
        out.append({"name": FAULT, "typed_config": fault})
    limited = sorted({(t.service, routed_name(t.service, t.subset, clusters))
                      for r in forwarding for t in r.to
                      if clusters[t.service].rate_limit is not None})  # fmt: skip
    if limited:
        out.append(
            {
                "name": SERVICE_LIMIT,
                "typed_config": typed(LIMIT_TYPE, service_limits(limited, clusters)),
            }
        )
    router = typed(
        "envoy.extensions.filters.http.router.v3.Router", {"suppress_envoy_headers": True}
    )
    out.append({"name": "envoy.filters.http.router", "typed_config": router})
    return out


def service_limits(limited: list[tuple[str, str]], clusters: dict[str, Cluster]) -> Json:
    """One token bucket per (service, routed cluster), selected by the cluster the route
    picked: one per service, except that each subset's cluster has its own (a gap)."""
    descriptors = []
    for s, name in limited:
        rl = clusters[s].rate_limit
        assert rl is not None
        limit = rate_limit(rl, "service")
        descriptors.append({
            "entries": [{"key": "destination_cluster", "value": name}],
            "token_bucket": limit["token_bucket"],
        })  # fmt: skip
    return {
        "stat_prefix": "service",
        "rate_limits": [{"actions": [{"destination_cluster": {}}]}],
        "descriptors": descriptors,
        "filter_enabled": limit["filter_enabled"],
        "filter_enforced": limit["filter_enforced"],
        "response_headers_to_add": limit["response_headers_to_add"],
        "rate_limited_as_resource_exhausted": True,
    }


def connection_manager(
    lst: Listener, routes: list[Route], builder: RouteBuilder, access: ListenerAccess | None
) -> Json:
    limits = lst.limits
    clusters = builder.clusters
    config = {
        "stat_prefix": lst.name,
        "codec_type": "AUTO",
        "route_config": {"name": lst.name, "virtual_hosts": virtual_hosts(routes, builder, access)},
        "http_filters": http_filters(routes, clusters, access),
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "strip_any_host_port": True,
        "strip_trailing_host_dot": True,
        "server_header_transformation": "PASS_THROUGH",
        "use_remote_address": True,
        "preserve_external_request_id": True,
        "request_headers_timeout": duration(limits.request_head_timeout_s),
        "max_request_headers_kb": min(MAX_HEADERS_KB, math.ceil(limits.request_head_bytes / 1024)),
        "common_http_protocol_options": {
            "idle_timeout": duration(limits.client_idle_timeout_s),
            "max_headers_count": limits.request_headers,
        },
        "http2_protocol_options": DOWNSTREAM_HTTP2,
    }
    if access is not None and access.audit:
        config["access_log"] = [audit_log(lst.name)]
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed(HCM_TYPE, config),
    }


def network_filters(
    lst: Listener, routes: list[Route], builder: RouteBuilder, access: ListenerAccess | None
) -> list[Json]:
    """Connection limit, then the HTTP connection manager (tcp listeners: :mod:`.envoy_tcp`)."""
    limit = typed(
        "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        {"stat_prefix": lst.name, "max_connections": lst.limits.max_connections},
    )
    return [
        {"name": "envoy.filters.network.connection_limit", "typed_config": limit},
        connection_manager(lst, routes, builder, access),
    ]


def downstream_tls(lst: Listener) -> Json | None:
    tls = lst.tls
    if tls is None:
        return None
    common: Json = {
        "tls_params": tls_params(tls.min_version),
        "tls_certificates": [
            {"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}
        ],
        "alpn_protocols": ["h2", "http/1.1"],
    }
    if tls.client_certificates != "none" and tls.ca is not None:
        common["validation_context"] = {"trusted_ca": {"filename": tls.ca}}
    context: Json = {
        "common_tls_context": common,
        "require_client_certificate": tls.client_certificates == "required",
    }
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", context
        ),
    }


def listeners(tables: Tables, builder: RouteBuilder) -> list[Json]:
    """Every listener, in file order, with the routes it serves in route-table order."""
    rules = AccessRules(tables) if any(enforced_on(x) for x in tables.listeners) else None
    by_name = {r.name: r for r in tables.routes}
    out = []
    clusters = builder.clusters
    for lst in tables.listeners:
        if lst.protocol == "tcp":
            out.append(envoy_tcp.listener(lst, tables, clusters, downstream_tls(lst)))
            continue
        routes = [by_name[n] for n in lst.routes]
        access = rules.for_listener(lst) if rules is not None and enforced_on(lst) else None
        chain: Json = {"filters": network_filters(lst, routes, builder, access)}
        tls = downstream_tls(lst)
        if tls is not None:
            chain["transport_socket"] = tls
        out.append({
            "name": lst.name,
            "address": socket_address(lst.host, lst.port),
            "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
            "filter_chains": [chain],
        })  # fmt: skip
    return out
