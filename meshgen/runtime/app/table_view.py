"""Tables as people read them: nested mappings from mesh.yaml field names to short texts.

Theory of operation: a *view* spells one table object the way mesh.yaml does (``timeout:
10s``, ``retries.backoff.base: 25ms``, ``threshold: 5%``) as a nested dict whose leaves are
strings. A value that is unset (None) has no key. Collections become mappings keyed by what
names an element to a person (``endpoint 10.0.0.7:80``, ``to reviews/v3``, ``subset v1``), so
two views compare key by key and a difference names the element, never a list index.
:mod:`.table_changes` diffs two views (the runtime's reload log and ``meshgen plan``), and
``meshgen explain`` prints a service's view with the origin of each value: the dotted path of
a leaf (``retries.backoff.base``) is the mesh.yaml field that sets it.

A route's destinations show only the per-request policy that differs from the service's own
(a route override, or a merged value the route changed): a ``defaults:`` change then reads as
one change per service, not one per route as well.

Standard library only: the runtime (copied into DIST) builds views of its own tables.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Final, TypeAlias

from ..observe.alert_rules import format_duration, format_threshold
from ..tables import (
    Alert,
    ClientTls,
    Cluster,
    Fault,
    HeaderOps,
    HealthCheck,
    Listener,
    Match,
    MeshInfo,
    RetryPolicy,
    Route,
    Slo,
    StaticDiscovery,
    Tables,
    Target,
)

View: TypeAlias = "dict[str, str | View]"

# Table field -> mesh.yaml field (dotted: nested mappings). Others: the name without ``_s``.
RENAMES: Final = {
    "backoff_base_s": "backoff.base",
    "backoff_max_s": "backoff.max",
    "budget_ratio": "budget.ratio",
    "budget_min_per_second": "budget.min_per_second",
    "hash_header": "hash_on.header",
    "hash_cookie": "hash_on.cookie",
    "hash_source_ip": "hash_on.source_ip",
    "delay_s": "delay.fixed",
    "delay_percent": "delay.percent",
    "abort_status": "abort.status",
    "abort_percent": "abort.percent",
    "record_type": "type",
    "query_name": "name",
}
PERCENT: Final = frozenset(
    {"max_ejection_percent", "panic_threshold", "percent", "delay_percent", "abort_percent",
     "objective"}
)  # fmt: skip
# Flags whose False is the same as leaving them out of mesh.yaml (shown only when set).
FLAGS: Final = frozenset({"hash_source_ip"})
# Fields that identify the object (they are its key) or are derived, never shown as values.
SKIPPED: Final = frozenset({"name", "budget_route", "address", "kind"})
ENDPOINT_KEY: Final = frozenset({"host", "port"})
CLUSTER_SPECIAL: Final = frozenset(
    {"discovery", "subsets", "timeout_s", "idle_timeout_s", "retries"}
)
ROUTE_SPECIAL: Final = frozenset(
    {"match", "to", "fault", "mirror", "request_headers", "response_headers"}
)
TARGET_SPECIAL: Final = frozenset(
    {"service", "subset", "weight", "timeout_s", "idle_timeout_s", "retries"}
)


def text(name: str, value: Any) -> str:
    """One value as mesh.yaml writes it; ``name`` is the table field (``timeout_s``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | int) and name.endswith("_s"):
        return format_duration(value)
    if isinstance(value, float | int) and name in PERCENT:
        return f"{value:g}%"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return "{" + ", ".join(f"{k}: {v}" for k, v in value) + "}"
        return "[" + ", ".join(text(name, v) for v in value) + "]"
    return str(value)


def put(view: View, dotted: str, value: str | View) -> None:
    """Set ``view[a][b]`` for ``dotted`` ``a.b``, making the inner mappings."""
    *outer, last = dotted.split(".")
    for key in outer:
        inner = view.setdefault(key, {})
        assert isinstance(inner, dict), dotted
        view = inner
    view[last] = value


def fields_view(obj: Any, skip: frozenset[str] = frozenset()) -> View:
    """A dataclass's fields under their mesh.yaml names; None and empty values left out.

    The views below start from this and treat only some fields specially, so a field added to
    a table type later shows up in plans and reload logs without anyone remembering to."""
    view: View = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in SKIPPED or f.name in skip or value is None or value in ((), ""):
            continue
        if value is False and f.name in FLAGS:
            continue
        name = RENAMES.get(f.name, f.name.removesuffix("_s"))
        put(view, name, fields_view(value) if is_dataclass(value) else text(f.name, value))
    return view


def leaves(view: View, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(field name, text)`` of every leaf, in view order (see :func:`field_name`)."""
    out: list[tuple[str, str]] = []
    for key, value in view.items():
        inner = (*path, key)
        if isinstance(value, dict):
            out += leaves(value, inner) if value else [(field_name(inner), "{}")]
        else:
            out.append((field_name(inner), value))
    return out


def field_name(path: tuple[str, ...]) -> str:
    """Keys joined by ``.`` (``retries.attempts``), by a space after an element's key
    (``to reviews/v1 weight``, ``endpoint 10.0.0.7:80 zone``)."""
    name = ""
    for i, key in enumerate(path):
        name += key if i == 0 else (" " if " " in path[i - 1] else ".") + key
    return name


def compact(view: View) -> str:
    """A whole view on one line: ``attempts 2, per_try_timeout 2s``."""
    return ", ".join(f"{name} {value}" for name, value in leaves(view))


def health_view(check: HealthCheck) -> View:
    view = fields_view(check)
    kind: View = {}
    owned = {"path": "http", "expected_statuses": "http", "grpc_service": "grpc"}
    for key, owner in owned.items():
        value = view.pop(key, None)
        if check.kind == owner and value:
            kind[key.removeprefix("grpc_")] = value
    return {check.kind: kind, **view}


def _retries(policy: RetryPolicy | None) -> View | str:
    return "none" if policy is None else fields_view(policy)


def call_view(timeout_s: float, idle_timeout_s: float, retries: RetryPolicy | None) -> View:
    """The per-request policy (what a route can override), as on a service."""
    return {
        "timeout": format_duration(timeout_s),
        "idle_timeout": format_duration(idle_timeout_s),
        "retries": _retries(retries),
    }


def service_view(tables: Tables, cluster: Cluster) -> View:
    """A service: its endpoints (or DNS discovery), subsets and every effective policy."""
    view: View = {"protocol": cluster.protocol}
    if isinstance(cluster.discovery, StaticDiscovery):
        for e in cluster.discovery.endpoints:
            view[f"endpoint {e.address}"] = fields_view(e, ENDPOINT_KEY)
    else:
        view["discovery"] = {"dns": fields_view(cluster.discovery)}
    for s in cluster.subsets:
        view[f"subset {s.name}"] = {"labels": text("labels", s.labels) if s.labels else "{}"}
    rest = fields_view(cluster, CLUSTER_SPECIAL)
    view["load_balancer"] = rest.pop("load_balancer")
    check = tables.health_checks.get(cluster.name)
    if check is not None:
        view["health_check"] = health_view(check)
    outlier = tables.outlier_detection.get(cluster.name)
    if outlier is not None:
        view["outlier_detection"] = fields_view(outlier)
    view["circuit_breaker"] = rest.pop("circuit_breaker")
    view["connect_timeout"] = rest.pop("connect_timeout")
    view.update(call_view(cluster.timeout_s, cluster.idle_timeout_s, cluster.retries))
    view.update(rest)  # rate_limit, failover, and whatever a later version adds
    view["tls"] = fields_view(tables.client_tls.get(cluster.name, ClientTls()))
    return view


def match_view(match: Match) -> View:
    view: View = {}
    if match.hosts:
        view["host"] = match.hosts[0] if len(match.hosts) == 1 else text("hosts", match.hosts)
    view[f"path_{match.path_kind}"] = match.path
    if match.methods:
        view["methods"] = text("methods", match.methods)
    if match.headers:
        view["headers"] = {h.name: f"{h.kind} {h.value}".rstrip() for h in match.headers}
    return view


def target_name(service: str, subset: str | None) -> str:
    return service if subset is None else f"{service}/{subset}"


def target_view(target: Target, cluster: Cluster | None) -> View:
    """A destination's weight, and its per-request policy where it differs from the service's."""
    view: View = {"weight": str(target.weight)}
    own = call_view(target.timeout_s, target.idle_timeout_s, target.retries)
    base = call_view(cluster.timeout_s, cluster.idle_timeout_s, cluster.retries) if cluster else {}
    view.update({k: v for k, v in own.items() if base.get(k) != v})
    view.update(fields_view(target, TARGET_SPECIAL))
    return view


def fault_view(fault: Fault) -> View:
    """Only the parts a fault has: ``abort.status`` 0 means no abort."""
    view = fields_view(fault)
    if not fault.abort_status:
        view.pop("abort")
    if not fault.delay_s:
        view.pop("delay")
    return view


def _header_ops(ops: HeaderOps) -> View:
    view: View = {}
    if ops.set:
        view["set"] = dict(ops.set)
    if ops.remove:
        view["remove"] = text("remove", ops.remove)
    return view


def route_view(tables: Tables, route: Route) -> View:
    """A route: its match, destinations, mirror and what it does to requests and responses."""
    clusters = {c.name: c for c in tables.clusters}
    view: View = {"match": match_view(route.match)}
    for t in route.to:
        view[f"to {target_name(t.service, t.subset)}"] = target_view(t, clusters.get(t.service))
    view.update(fields_view(route, ROUTE_SPECIAL))  # rate_limit, rewrite, redirect, ...
    if route.fault is not None:
        view["fault"] = fault_view(route.fault)
    if route.mirror is not None:
        view["mirror"] = {
            "to": target_name(route.mirror.service, route.mirror.subset),
            "percent": text("percent", route.mirror.percent),
        }
    headers: View = {}
    for side, ops in (("request", route.request_headers), ("response", route.response_headers)):
        if ops.set or ops.remove:
            headers[side] = _header_ops(ops)
    if headers:
        view["headers"] = headers
    return view


def listener_view(listener: Listener) -> View:
    host, port = listener.host, listener.port
    view: View = {
        "address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "routes": text("routes", tuple(sorted(listener.routes))),  # tried in table order
    }
    view.update(fields_view(listener, frozenset({"host", "port", "routes", "to", "sni"})))
    for t in listener.to:
        view[f"to {target_name(t.service, t.subset)}"] = str(t.weight)
    for r in listener.sni:
        view[f"sni {r.pattern}"] = r.service
    return view


def mesh_view(mesh: MeshInfo) -> View:
    view: View = {"name": mesh.name, "domain": mesh.domain or "none"}
    view["admin"] = f"{mesh.admin_host}:{mesh.admin_port}"
    view.update(fields_view(mesh, frozenset({"domain", "admin_host", "admin_port"})))
    return view


def alert_view(alert: Alert) -> View:
    """``threshold`` in the unit ``when`` writes it in (``5%``, ``250ms``)."""
    view: View = {}
    for key, value in fields_view(alert, frozenset({"threshold"})).items():
        view[key] = value
        if key == "op":
            view["threshold"] = format_threshold(alert.signal, alert.threshold)
    return view


def slo_view(slo: Slo) -> View:
    return fields_view(slo, frozenset({"page", "ticket"}))  # burn windows follow from window
