"""Lowering: parsed values, implied defaults (routes, listener, admin), DNS names, errors."""

from __future__ import annotations

import pytest

from meshgen.lower import lower, normalize_host, split_address
from meshgen.model import DnsDiscovery, StaticDiscovery
from tests.unit.h2_mesh import ONE_SERVICE, diagnose, document, mesh_of


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:15001", ("127.0.0.1", 15001)),
        ("[::1]:80", ("::1", 80)),
        ("Backend.Local:0", ("backend.local", 0)),
        ("[fe80::1]:65535", ("fe80::1", 65535)),
    ],
)
def test_split_address_accepts_host_port(text: str, expected: tuple[str, int]) -> None:
    """host:port and [v6]:port; host names are lower-cased."""
    assert split_address(text) == expected


@pytest.mark.parametrize(
    "text", ["::1:80", "host", ":80", "host:", "h:65536", "[127.0.0.1]:80", "h:8x"]
)
def test_split_address_rejects_malformed(text: str) -> None:
    """Bare IPv6, missing parts, ports above 65535 and bracketed IPv4 are invalid."""
    assert split_address(text) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Reviews", "reviews"),
        ("reviews.mesh.test.", "reviews.mesh.test"),
        ("a:8080", "a"),
        ("[::1]:80", "[::1]"),
    ],
)
def test_normalize_host(host: str, expected: str) -> None:
    """Route hosts are lower-case, without port or trailing dot."""
    assert normalize_host(host) == expected


def test_default_routes_listener_and_admin() -> None:
    """Without routes/listeners/admin: one route per service, edge on 15001, admin on 15000."""
    mesh = mesh_of(
        ONE_SERVICE + "  details:\n    discovery: {static: [{address: 127.0.0.1:9082}]}\n"
    )
    assert [r.name for r in mesh.routes] == ["details", "reviews"]
    route = mesh.routes[1]
    assert route.synthetic and route.match.hosts == ("reviews", "reviews.mesh.test")
    assert route.match.path_kind == "prefix" and route.match.path == "/"
    assert [(d.service, d.weight) for d in route.to] == [("reviews", 100)]
    (edge,) = mesh.listeners
    assert (edge.name, edge.host, edge.port, edge.routes) == ("edge", "127.0.0.1", 15001, None)
    assert mesh.listener_routes(edge) == ("details", "reviews")
    assert (mesh.admin_host, mesh.admin_port, mesh.admin_path) == ("127.0.0.1", 15000, None)


def test_listener_limits_are_lowered_with_defaults() -> None:
    """`limits:` fields written are parsed (durations in seconds); the rest keep the defaults
    (64 KiB head, 100 headers, 16 KiB URL, 10 s head, 60 s idle, 10,000 connections)."""
    mesh = mesh_of(
        ONE_SERVICE
        + "listeners:\n"
        + "  - {name: a, address: 127.0.0.1:1,\n"
        + "     limits: {url_bytes: 2048, client_idle_timeout: 5m}}\n"
        + "  - {name: b, address: 127.0.0.1:2}\n"
    )
    a, b = mesh.listeners
    assert (a.limits.url_bytes, a.limits.client_idle_timeout_s) == (2048, 300.0)
    defaults = (65536, 100, 16384, 10.0, 60.0, 10000)
    assert (
        b.limits.request_head_bytes,
        b.limits.request_headers,
        b.limits.url_bytes,
        b.limits.request_head_timeout_s,
        b.limits.client_idle_timeout_s,
        b.limits.max_connections,
    ) == defaults
    assert (a.limits.request_head_bytes, a.limits.max_connections) == (65536, 10000)


def test_dns_names_are_qualified_with_the_domain() -> None:
    """Dotless names get mesh.domain; SRV queries _http._tcp.NAME; dotted names are FQDNs."""
    mesh = mesh_of(
        """
        services:
          a: {discovery: {dns: {name: payments}}}
          b: {discovery: {dns: {name: Pay.Example.COM., type: A, port: 80, refresh: 5s}}}
          c: {discovery: {dns: {name: c}}}
        """
    )
    a, b = mesh.services["a"].discovery, mesh.services["b"].discovery
    assert isinstance(a, DnsDiscovery) and isinstance(b, DnsDiscovery)
    assert (a.query_name, a.record_type, a.refresh_s) == (
        "_http._tcp.payments.mesh.test",
        "SRV",
        30.0,
    )
    assert (b.query_name, b.record_type, b.port, b.refresh_s) == ("pay.example.com", "A", 80, 5.0)


def test_static_endpoints_are_parsed() -> None:
    """Addresses split into host/port; labels become sorted pairs; weight defaults to 1."""
    mesh = mesh_of(
        """
        services:
          a:
            discovery:
              static:
                - {address: "[::1]:9081", zone: z1, labels: {version: v1, app: a}}
                - {address: 127.0.0.1:9082, weight: 5}
        """
    )
    discovery = mesh.services["a"].discovery
    assert isinstance(discovery, StaticDiscovery)
    first, second = discovery.endpoints
    assert (first.host, first.port, first.address, first.zone) == ("::1", 9081, "[::1]:9081", "z1")
    assert first.labels == (("app", "a"), ("version", "v1"))
    assert (second.weight, first.weight) == (5, 1)


def test_route_fields_are_lowered() -> None:
    """Match, fault, mirror, rewrite, header ops and redirect reach the model normalised."""
    mesh = mesh_of(
        ONE_SERVICE
        + """
routes:
  - name: r
    match:
      host: [Reviews.mesh.test, reviews]
      path_prefix: /api
      methods: [post, GET]
      headers: {X-User: {exact: jason}, x-debug: {present: true}}
    to: [{service: reviews}]
    fault: {delay: {fixed: 7s, percent: 10}, abort: {status: 503}}
    mirror: {service: reviews}
    rewrite: {path_prefix: /v2/}
    headers:
      request: {set: {X-Env: prod}, remove: [X-Debug]}
  - name: moved
    redirect: {location: https://new.example/}
"""
    )
    route, moved = mesh.routes
    assert route.match.hosts == ("reviews.mesh.test", "reviews")
    assert route.match.methods == ("GET", "POST")
    assert [(h.name, h.kind, h.value) for h in route.match.headers] == [
        ("x-debug", "present", ""),
        ("x-user", "exact", "jason"),
    ]
    assert route.fault is not None
    assert (route.fault.delay_s, route.fault.delay_percent) == (7.0, 10.0)
    assert (route.fault.abort_status, route.fault.abort_percent) == (503, 100.0)
    assert route.mirror is not None and route.mirror.percent == 100.0
    assert route.request_headers.set == (("x-env", "prod"),)
    assert route.request_headers.remove == ("x-debug",)
    assert moved.redirect is not None and moved.redirect.status == 301 and not moved.has_to


def test_bad_addresses_are_reported_not_raised() -> None:
    """A port above 65535 or an endpoint on port 0 is E401 at the address."""
    diags = diagnose(
        """
        services:
          a: {discovery: {static: [{address: "127.0.0.1:70000"}, {address: "127.0.0.1:0"}]}}
        listeners:
          - {name: edge, address: "::1:80"}
        admin: 127.0.0.1:99999
        """
    )
    assert [d.code for d in diags] == ["E401"] * 4
    assert diags[0].span.line == 5


def test_lowering_errors_leave_their_part_out() -> None:
    """A service with a bad address is left out (and named as skipped); the rest is lowered."""
    mesh, diags = lower(
        document(
            "services:\n  a: {discovery: {static: [{address: x}]}}\n"
            "  b: {discovery: {static: [{address: 127.0.0.1:1}]}}\n"
        )
    )
    assert [d.code for d in diags] == ["E401"]
    assert mesh is not None and list(mesh.services) == ["b"]
    assert mesh.skipped.services == {"a"} and mesh.skipped.units == {("services", "a")}


def test_an_error_outside_every_part_gives_no_mesh() -> None:
    """A bad admin address spoils no single part: no model (the pipeline stops there)."""
    mesh, diags = lower(document(ONE_SERVICE + "admin: 127.0.0.1:99999\n"))
    assert mesh is None and [d.code for d in diags] == ["E401"]
