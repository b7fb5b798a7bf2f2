"""Envoy tcp listeners: ``tcp_proxy`` for ``to``, ``tls_inspector`` filter chains for ``sni``.

Theory of operation (docs/envoy.md, "tcp listeners"):

* ``to``: one filter chain, a connection limit then ``tcp_proxy`` to the target's routed
  cluster (the subset's or the service's, its failover aggregate when it has a backup) or
  ``weighted_clusters`` for a split. ``idle_timeout`` and ``max_connect_attempts``
  (``1 + retries.attempts``) are one value per ``tcp_proxy``: a split over services that
  differ in them gets the largest (a gap); ``limits.max_connection_duration`` is
  ``max_downstream_connection_duration``.
* ``sni``: the ``tls_inspector`` listener filter (bounded by ``listener_filters_timeout``, the
  runtime's ClientHello wait) and one filter chain per pattern with ``server_names``; Envoy
  picks the exact name, then the longest wildcard, as the runtime; a name no chain matches
  (or none) closes the connection. TLS is never terminated.
* ``tls`` with client certificates: the network ``rbac`` filter allows the callers the
  runtime would admit (:meth:`AccessPolicy.connection_denial` for every caller the rules
  name, and ``*``); ``access: audit`` makes them shadow rules.
"""

from __future__ import annotations

from meshgen.runtime.codec.sni import HELLO_WAIT
from meshgen.runtime.policy.access import ANY, AccessPolicy, enforced_on, listener_services
from meshgen.runtime.policy.sni import precedence
from meshgen.runtime.tables import Cluster, Listener, Tables, TcpTarget

from .envoy_access import AUDIT_PREFIX, principal
from .envoy_clusters import BUFFER_LIMIT, routed_name
from .envoy_syntax import Json, duration, socket_address, typed

TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
NETWORK_RBAC = "envoy.extensions.filters.network.rbac.v3.RBAC"
TLS_INSPECTOR = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"


def per_proxy(targets: list[TcpTarget], clusters: dict[str, Cluster]) -> tuple[float, int]:
    """(idle timeout, connect attempts) of one ``tcp_proxy`` over ``targets``: the largest."""
    chosen = [clusters[t.service] for t in targets]
    idle = max(c.idle_timeout_s for c in chosen)
    attempts = max(1 + (c.retries.attempts if c.retries else 0) for c in chosen)
    return idle, attempts


def tcp_proxy(
    stat: str,
    targets: list[TcpTarget],
    lst: Listener,
    clusters: dict[str, Cluster],
) -> Json:
    idle, attempts = per_proxy(targets, clusters)
    config: Json = {
        "stat_prefix": stat,
        "idle_timeout": duration(idle),
        "max_connect_attempts": attempts,
    }
    entries = [
        {"name": routed_name(t.service, t.subset, clusters), "weight": t.weight} for t in targets
    ]
    if len(entries) == 1:
        config["cluster"] = entries[0]["name"]
    else:
        config["weighted_clusters"] = {"clusters": entries}
    age = lst.limits.max_connection_duration_s
    if age is not None:
        config["max_downstream_connection_duration"] = duration(age)
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": typed(TCP_PROXY, config)}


def rbac(lst: Listener, tables: Tables, clusters: dict[str, Cluster]) -> Json:
    """Identity-only admission: the callers allowed to every service the listener reaches."""
    policy = AccessPolicy.from_tables(tables)
    reach = listener_services(lst, clusters)
    allowed = [c for c in (*policy.callers, ANY) if policy.connection_denial(c, reach) is None]
    principals = [principal(c, tables.mesh.name) for c in allowed]
    policies = {"callers": {"permissions": [{"any": True}], "principals": principals}}
    rules = {"action": "ALLOW", "policies": policies if principals else {}}
    body: Json = {"stat_prefix": lst.name}
    if lst.access == "audit":
        body.update(shadow_rules=rules, shadow_rules_stat_prefix=AUDIT_PREFIX)
    else:
        body["rules"] = rules
    return {"name": "envoy.filters.network.rbac", "typed_config": typed(NETWORK_RBAC, body)}


def listener(
    lst: Listener,
    tables: Tables,
    clusters: dict[str, Cluster],
    tls: Json | None,
) -> Json:
    limit = typed(
        "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        {"stat_prefix": lst.name, "max_connections": lst.limits.max_connections},
    )
    head = [{"name": "envoy.filters.network.connection_limit", "typed_config": limit}]
    if enforced_on(lst) and tables.access:
        head.append(rbac(lst, tables, clusters))
    out: Json = {
        "name": lst.name,
        "address": socket_address(lst.host, lst.port),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT,
    }
    if not lst.sni:
        chain: Json = {
            "filters": [
                *head,
                tcp_proxy(lst.name, [t for t in lst.to if t.weight > 0], lst, clusters),
            ]
        }
        if tls is not None:
            chain["transport_socket"] = tls
        out["filter_chains"] = [chain]
        return out
    out["listener_filters"] = [
        {"name": "envoy.filters.listener.tls_inspector", "typed_config": typed(TLS_INSPECTOR)}
    ]
    out["listener_filters_timeout"] = duration(HELLO_WAIT)
    out["filter_chains"] = [
        {
            "filter_chain_match": {"server_names": [r.pattern]},
            "filters": [
                *head,
                tcp_proxy(f"{lst.name}.{i}", [TcpTarget(r.service, None, 100)], lst, clusters),
            ],
        }
        for i, r in enumerate(precedence(lst.sni))
    ]
    return out
