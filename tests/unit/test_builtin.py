"""Built-in defaults are written once (meshgen.builtin); the schema and the table types agree.

Where a default is spelled out again -- a schema property's ``default`` (what editors and the
reference show) or a runtime table type's dataclass default -- it must equal the table's, and
a build of a spec that writes none of these fields must produce exactly the table's values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from meshgen import builtin
from meshgen.builtin import BUILT_INS
from meshgen.durations import DURATION_RE, parse_duration
from meshgen.lower import split_address
from meshgen.plan import to_tables
from meshgen.resources import schema_text
from meshgen.runtime import tables as t
from tests.unit.h2_mesh import mesh_of

SCHEMA = json.loads(schema_text())


def _defaults(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """(JSON pointer, default) of every schema node that has a ``default``."""
    if isinstance(node, dict):
        if "default" in node:
            yield pointer, node["default"]
        for key, value in node.items():
            yield from _defaults(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _defaults(value, f"{pointer}/{index}")


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same JSON type (1 is not true, 50 is not "50")."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_every_schema_default_is_a_built_in() -> None:
    """Each schema `default` is claimed by one entry of BUILT_INS, with the same value."""
    claimed = {p: name for name, b in BUILT_INS.items() for p in b.schema}
    for pointer, value in _defaults(SCHEMA):
        name = claimed.get(pointer)
        assert name is not None, f"schema default at {pointer} has no entry in meshgen/builtin.py"
        assert _same(value, BUILT_INS[name].value), (pointer, value, BUILT_INS[name].value)


def test_every_schema_pointer_of_the_table_has_that_default() -> None:
    """No entry names a schema property that lacks the default (or does not exist)."""
    found = dict(_defaults(SCHEMA))
    for name, entry in BUILT_INS.items():
        for pointer in entry.schema:
            assert pointer in found, f"{name}: {pointer} has no default in the schema"


def _as_table_value(field: str, value: Any) -> Any:
    """What a table field holds for a value written in mesh.yaml."""
    if isinstance(value, str) and DURATION_RE.fullmatch(value) and field.endswith("_s"):
        return parse_duration(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _table_default(spec: str) -> Any:
    type_name, field = spec.split(".")
    cls = getattr(t, type_name)
    (found,) = [f for f in dataclasses.fields(cls) if f.name == field]
    assert found.default is not dataclasses.MISSING, f"{spec} has no default"
    return found.default


@pytest.mark.parametrize("name", sorted(n for n, b in BUILT_INS.items() if b.table))
def test_table_type_defaults_equal_the_built_in(name: str) -> None:
    """The dataclass default of each runtime table field named by an entry is its value."""
    entry = BUILT_INS[name]
    if name == "admin":
        assert tuple(_table_default(f) for f in entry.table) == split_address(entry.value)
        return
    for spec in entry.table:
        expected = _as_table_value(spec.split(".")[1], entry.value)
        actual = _table_default(spec)
        same_kind = isinstance(actual, bool) == isinstance(expected, bool)  # True is not 1
        assert actual == expected and same_kind, (spec, actual, expected)


BARE = """
services:
  a:
    discovery: {static: [{address: 127.0.0.1:9081}]}
    health_check: {http: {}}
    outlier_detection: {}
    retries: {}
    failover: {}
    tls: {mode: simple}
  b:
    discovery: {dns: {name: b}, }
  c:
    protocol: tcp
    discovery: {static: [{address: 127.0.0.1:6379}]}
    health_check: {grpc: {}, port: 9000}
listeners:
  - {name: edge, address: 127.0.0.1:0, tls: {cert: c.pem, key: k.pem}}
  - {name: db, address: 127.0.0.1:0, protocol: tcp, to: [{service: c}]}
routes:
  - {name: r, to: [{service: a}], fault: {delay: {fixed: 1s}, abort: {status: 503}},
     mirror: {service: a}}
  - {name: moved, redirect: {location: /x}}
monitoring:
  alerts: [{name: x, service: a, when: "error_rate > 5%"}]
  slos: [{name: s, service: a, objective: 99.9}]
"""


def test_lowering_a_spec_that_writes_nothing_gives_the_built_ins() -> None:
    """Every optional field left out lowers (and plans) to exactly the table's value."""
    mesh = mesh_of(BARE)
    tables = to_tables(mesh)
    a, b, c = tables.clusters
    grpc_check = tables.health_checks["c"]
    check, od, tls = (
        tables.health_checks["a"],
        tables.outlier_detection["a"],
        tables.client_tls["a"],
    )
    assert a.retries is not None and isinstance(b.discovery, t.DnsDiscovery)
    endpoint = a.discovery.endpoints[0]  # type: ignore[union-attr]
    route, moved = tables.routes
    fault, alert, slo = mesh.routes[0].fault, mesh.alerts[0], mesh.slos[0]
    assert fault is not None and route.mirror is not None and moved.redirect is not None
    server, limits = tables.listeners[0].tls, tables.listeners[0].limits
    assert server is not None
    seconds = builtin.seconds
    lowered = {
        "admin": (tables.mesh.admin_host, tables.mesh.admin_port),
        "service.protocol": a.protocol,
        "tcp_service.idle_timeout": c.idle_timeout_s,
        "service.health_check.grpc.service": grpc_check.grpc_service,
        "listener.protocol": tables.listeners[0].protocol,
        "service.connect_timeout": a.connect_timeout_s,
        "service.timeout": a.timeout_s,
        "service.idle_timeout": a.idle_timeout_s,
        "service.discovery.static.weight": endpoint.weight,
        "service.discovery.dns.type": b.discovery.record_type,
        "service.discovery.dns.refresh": b.discovery.refresh_s,
        "service.load_balancer.policy": a.load_balancer.policy,
        "service.load_balancer.choice_count": a.load_balancer.choice_count,
        "service.health_check.http.path": check.path,
        "service.health_check.http.expected_statuses": check.expected_statuses,
        "service.health_check.interval": check.interval_s,
        "service.health_check.timeout": check.timeout_s,
        "service.health_check.healthy_threshold": check.healthy_threshold,
        "service.health_check.unhealthy_threshold": check.unhealthy_threshold,
        "service.outlier_detection.consecutive_5xx": od.consecutive_5xx,
        "service.outlier_detection.interval": od.interval_s,
        "service.outlier_detection.base_ejection_time": od.base_ejection_time_s,
        "service.outlier_detection.max_ejection_percent": od.max_ejection_percent,
        "service.circuit_breaker.max_connections": a.circuit_breaker.max_connections,
        "service.circuit_breaker.max_pending_requests": a.circuit_breaker.max_pending_requests,
        "service.circuit_breaker.max_requests": a.circuit_breaker.max_requests,
        "service.retries.attempts": a.retries.attempts,
        "service.retries.on": a.retries.on,
        "service.retries.backoff.base": a.retries.backoff_base_s,
        "service.retries.backoff.max": a.retries.backoff_max_s,
        "service.retries.budget.ratio": a.retries.budget_ratio,
        "service.retries.budget.min_per_second": a.retries.budget_min_per_second,
        "service.retries.idempotent_only": a.retries.idempotent_only,
        "service.tls.min_version": tls.min_version,
        "service.tls.verify": tls.verify,
        "service.tls.insecure": mesh.services["a"].tls.insecure,
        "service.failover.panic_threshold": a.failover.panic_threshold,
        "route.match.path_prefix": route.match.path,
        "route.fault.delay.percent": fault.delay_percent,
        "route.fault.abort.percent": fault.abort_percent,
        "route.mirror.percent": route.mirror.percent,
        "route.redirect.status": moved.redirect.status,
        "listener.tls.client_certificates": server.client_certificates,
        "listener.tls.min_version": server.min_version,
        "listener.access": tables.listeners[0].access,
        "listener.limits.request_head_bytes": limits.request_head_bytes,
        "listener.limits.request_headers": limits.request_headers,
        "listener.limits.url_bytes": limits.url_bytes,
        "listener.limits.request_head_timeout": limits.request_head_timeout_s,
        "listener.limits.client_idle_timeout": limits.client_idle_timeout_s,
        "listener.limits.max_connections": limits.max_connections,
        "alert.for": alert.for_s,
        "alert.severity": alert.severity,
        "slo.window": slo.window_s,
    }
    for name, actual in lowered.items():
        value = BUILT_INS[name].value
        if name == "admin":
            expected: Any = split_address(value)
        elif isinstance(value, str) and DURATION_RE.fullmatch(value):
            expected = seconds(name)
        else:
            expected = _as_table_value("", value)
        assert actual == expected, (name, actual, expected)
    untested = set(BUILT_INS) - set(lowered) - {"listeners", "service.tls.mode"}
    assert untested == set(), "add the new built-ins to this test"
    assert mesh_of("services: {a: {discovery: {static: [{address: 1.2.3.4:1}]}}}").services[
        "a"
    ].tls.mode == builtin.default("service.tls.mode")
    (edge,) = mesh_of("services: {a: {discovery: {static: [{address: 1.2.3.4:1}]}}}").listeners
    (default_listener,) = builtin.default("listeners")
    assert (edge.name, f"{edge.host}:{edge.port}") == (
        default_listener["name"],
        default_listener["address"],
    )
