"""tcp services and listeners from mesh.yaml to the runtime tables (meshgen.protocols).

A tcp service ignores what it cannot use of ``defaults:`` (and says so through its origins),
keeps what it writes itself, and gets no default route; a tcp listener becomes a table entry
with weighted targets or sorted SNI patterns. The diagnostics themselves are golden cases in
tests/diagnostics; here are the rules that decide when they fire.
"""

from __future__ import annotations

from meshgen.model import CircuitBreaker, HealthCheck, LoadBalancer, RateLimit
from meshgen.plan import to_tables
from meshgen.runtime import tables as t
from meshgen.schema import validate
from tests.unit.h2_mesh import codes, document, mesh_of

DEFAULTS = """
defaults:
  timeout: 5s
  idle_timeout: 30s
  rate_limit: {requests_per_second: 10}
  retries: {attempts: 3, on: [5xx], per_try_timeout: 1s}
  circuit_breaker: {max_requests: 7, max_connections: 9}
  health_check: {http: {path: /hz}, interval: 2s}
  load_balancer: {policy: maglev, hash_on: {header: x-user}}
"""
DB = """
  db:
    protocol: tcp
    discovery: {static: [{address: 127.0.0.1:5432}, {address: 127.0.0.1:5433}]}
"""
WEB = """
  web:
    discovery: {static: [{address: 127.0.0.1:9081}]}
"""
TCP_LISTENER = """
listeners:
  - {name: edge, address: 127.0.0.1:0}
  - {name: db, address: 127.0.0.1:0, protocol: tcp, to: [{service: db}]}
"""


def test_a_tcp_service_ignores_the_http_fields_of_defaults() -> None:
    """Inherited HTTP-only fields are gone (origins back to built-in); what applies stays."""
    text = DEFAULTS + "services:" + DB + WEB + TCP_LISTENER
    assert validate(document(text)) == []
    assert codes(text) == []
    mesh = mesh_of(text)
    db, web = mesh.services["db"], mesh.services["web"]
    assert db.rate_limit is None and web.rate_limit == RateLimit(10.0, 10)
    assert db.call.timeout_s == 15.0 and db.origin("timeout").kind == "built-in"
    assert db.call.idle_timeout_s == 3600.0 and web.call.idle_timeout_s == 30.0
    assert db.call.retries is not None and db.call.retries.attempts == 3
    assert db.call.retries.on == ("connect-failure",) and db.call.retries.per_try_timeout_s is None
    assert db.circuit_breaker == CircuitBreaker(9, 1024, 1024)
    assert db.load_balancer == LoadBalancer("maglev", 2, None, None, False)  # no header to hash
    check = db.health_check
    assert check is not None and (check.kind, check.interval_s) == ("tcp", 2.0)
    assert web.health_check is not None and web.health_check.kind == "http"


def test_a_tcp_service_keeps_its_own_idle_timeout_and_source_ip_hashing() -> None:
    text = (
        DEFAULTS
        + "services:"
        + DB
        + "    idle_timeout: 2h\n    load_balancer: {hash_on: {source_ip: true}}\n"
        + TCP_LISTENER
    )
    db = mesh_of(text).services["db"]
    assert db.call.idle_timeout_s == 7200.0
    assert db.load_balancer.hash_source_ip and db.load_balancer.policy == "maglev"


def test_an_http_check_on_a_health_port_stays_http() -> None:
    text = "services:" + DB + "    health_check: {http: {path: /ready}, port: 8080}\n"
    check = mesh_of(text + TCP_LISTENER).services["db"].health_check
    assert check == HealthCheck("http", "/ready", (200,), 5.0, 1.0, 2, 3, "", 8080)
    assert codes(text + TCP_LISTENER) == []


def test_grpc_replaces_an_inherited_http_check_and_needs_a_port_on_http1() -> None:
    """Probe kinds replace each other layer by layer; gRPC on an http1 port is E808."""
    text = (
        "defaults:\n  health_check: {http: {path: /hz}}\nservices:"
        + WEB
        + "    health_check: {grpc: {service: web.v1.Web}}\n"
    )
    check = mesh_of(text).services["web"].health_check
    assert check is not None and (check.kind, check.grpc_service) == ("grpc", "web.v1.Web")
    assert codes(text) == ["E808"]
    assert codes(text.replace("web.v1.Web}", "web.v1.Web}, port: 9090")) == []
    assert codes(text.replace("    discovery", "    protocol: grpc\n    discovery", 1)) == []


def test_tcp_services_get_no_default_route() -> None:
    mesh = mesh_of("services:" + DB + WEB + TCP_LISTENER)
    assert [r.name for r in mesh.routes] == ["web"]


def test_tcp_listener_tables() -> None:
    """Weights default to 100 for one target; SNI entries are sorted by pattern."""
    text = (
        "services:"
        + DB
        + DB.replace("db:", "db2:").replace("543", "643")
        + """
listeners:
  - name: split
    address: 127.0.0.1:0
    protocol: tcp
    to: [{service: db, weight: 90}, {service: db2, weight: 10}]
    limits: {max_connections: 5, max_connection_duration: 1h}
  - {name: one, address: 127.0.0.1:0, protocol: tcp, to: [{service: db}]}
  - name: pass
    address: 127.0.0.1:0
    protocol: tcp
    sni: {z.example: db, "*.example": db2, a.example: db}
"""
    )
    assert codes(text) == []
    tables = to_tables(mesh_of(text))
    split, one, passthrough = tables.listeners
    assert split.protocol == "tcp" and split.routes == ()
    assert split.to == (t.TcpTarget("db", None, 90), t.TcpTarget("db2", None, 10))
    assert split.limits.max_connections == 5 and split.limits.max_connection_duration_s == 3600
    assert one.to == (t.TcpTarget("db", None, 100),)
    assert [r.pattern for r in passthrough.sni] == ["*.example", "a.example", "z.example"]
    assert {c.name: c.protocol for c in tables.clusters} == {"db": "tcp", "db2": "tcp"}


def test_tcp_listener_weights_and_subsets_are_checked_like_routes() -> None:
    base = "services:" + DB + DB.replace("db:", "db2:").replace("543", "643") + "listeners:\n"
    entry = "  - {name: l, address: 127.0.0.1:0, protocol: tcp, to: %s}\n"
    assert codes(base + entry % "[{service: db, weight: 60}, {service: db2, weight: 60}]") == [
        "E301"
    ]
    assert codes(base + entry % "[{service: db, weight: 100}, {service: db2}]") == ["E302"]
    assert codes(base + entry % "[{service: db, subset: v9}]") == ["E202"]


def test_a_route_list_on_an_http_listener_ignores_tcp_listeners_for_w303() -> None:
    """W303 looks at http listeners only; with none at all every route is unserved."""
    text = "services:" + DB + WEB + "routes: [{name: r, to: [{service: web}]}]\n"
    tcp_only = "listeners: [{name: db, address: 127.0.0.1:0, protocol: tcp, to: [{service: db}]}]\n"
    assert codes(text + tcp_only) == ["W303"]
    assert codes(text + TCP_LISTENER) == []


def test_w504_on_a_tcp_listener_that_admits_nobody() -> None:
    """Identity-only rules: a caller must be allowed to every service the listener reaches."""
    text = (
        "services:"
        + DB
        + "    failover: {backup: dr}\n    health_check: {tcp: {}}\n"
        + DB.replace("db:", "dr:").replace("543", "643")
        + """
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    to: [{service: db}]
    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null, client_certificates: required}
access:
  - {from: orders, to: db}
"""
    )
    assert codes(text) == ["W504"]  # the backup 'dr' is reachable and nobody may call it
    assert codes(text + "  - {from: orders, to: dr}\n") == []
    assert codes(text + '  - {from: "*", to: dr}\n') == []


def test_request_alerts_on_tcp_services_are_errors_not_w601() -> None:
    text = "services:" + DB + TCP_LISTENER + "monitoring:\n  alerts:\n"
    alert = "    - {name: a, service: db, when: '%s'}\n"
    assert codes(text + alert % "request_rate < 1") == ["E811"]
    assert codes(text + alert % "healthy_ratio < 50%") == []
    assert codes(text + "  slos: [{name: s, service: db, objective: 99.9}]\n") == ["E811"]


def test_graph_draws_tcp_listeners_straight_to_their_services() -> None:
    from meshgen.review.graph import build_graph

    text = (
        "services:"
        + DB
        + "listeners:\n  - {name: db, address: 127.0.0.1:0, protocol: tcp, to: [{service: db}]}\n"
        + "  - {name: p, address: 127.0.0.1:0, protocol: tcp, sni: {'*.test': db}}\n"
    )
    edges = [(e.source, e.target, e.label) for e in build_graph(to_tables(mesh_of(text))).edges]
    assert edges == [
        ("listener:db", "service:db", "tcp 100%"),
        ("listener:p", "service:db", "*.test"),
    ]
