"""E2xx: references to services, subsets and routes resolve, with a "did you mean" hint."""

from __future__ import annotations

from tests.unit.h2_mesh import ONE_SERVICE, codes, diagnose

SUBSETS = """
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081, labels: {version: v1}}
    subsets:
      v1: {labels: {version: v1}}
"""


def test_spec_example_unknown_service() -> None:
    """The documented example (docs/diagnostics.md): exact message, code, position and hint."""
    (diag,) = diagnose(
        ONE_SERVICE
        + """routes:
  - name: reviews-split
    to:
      - service: reveiws
        weight: 100
"""
    )
    assert diag.code == "E201" and diag.severity == "error"
    assert diag.message == "route 'reviews-split' sends traffic to unknown service 'reveiws'"
    assert diag.hint == "did you mean 'reviews'?"
    assert (diag.span.line, diag.span.col, diag.span.end_col) == (12, 18, 25)


def test_known_references_are_clean() -> None:
    """A spec whose every reference resolves reports nothing."""
    assert (
        codes(
            SUBSETS
            + """
  ratings:
    discovery: {static: [{address: 127.0.0.1:9082}]}
    failover: {backup: reviews}
    outlier_detection: {}
routes:
  - name: r
    to: [{service: reviews, subset: v1}]
    mirror: {service: ratings}
listeners:
  - {name: edge, address: 127.0.0.1:0, routes: [r]}
monitoring:
  alerts:
    - {name: a, service: reviews, when: "error_rate > 5%", severity: page}
  slos:
    - {name: s, service: reviews, objective: 99.9, window: 30d}
"""
        )
        == []
    )


def test_unknown_subset() -> None:
    """E202 names the service's subsets when nothing is close."""
    (diag,) = diagnose(SUBSETS + "routes:\n  - name: r\n    to: [{service: reviews, subset: zz}]\n")
    assert diag.code == "E202"
    assert diag.message == "route 'r' sends traffic to unknown subset 'zz' of service 'reviews'"
    assert diag.hint == "service 'reviews' has subsets: v1"


def test_unknown_subset_close_match() -> None:
    """E202 suggests the closest subset."""
    (diag,) = diagnose(SUBSETS + "routes:\n  - name: r\n    to: [{service: reviews, subset: V1}]\n")
    assert diag.hint == "did you mean 'v1'?"


def test_unknown_mirror_service() -> None:
    """E203: a mirror to a service that does not exist."""
    spec = (
        ONE_SERVICE
        + "routes:\n  - name: r\n    to: [{service: reviews}]\n    mirror: {service: review}\n"
    )
    (diag,) = diagnose(spec)
    assert (diag.code, diag.hint) == ("E203", "did you mean 'reviews'?")


def test_unknown_listener_route() -> None:
    """E204: a listener serving a route that does not exist."""
    spec = (
        ONE_SERVICE
        + "routes:\n  - name: main\n    to: [{service: reviews}]\n"
        + "listeners:\n  - {name: edge, address: 127.0.0.1:0, routes: [mian]}\n"
    )
    (diag,) = diagnose(spec)
    assert diag.code == "E204" and diag.message == "listener 'edge' serves unknown route 'mian'"
    assert diag.hint == "did you mean 'main'?"


def test_unknown_access_target_but_any_caller_name() -> None:
    """E205 for `to`; `from` need not be a service."""
    spec = (
        ONE_SERVICE
        + "listeners:\n  - name: edge\n    address: 127.0.0.1:0\n"
        + "    tls: {cert: c.pem, key: k.pem, ca: ca.pem, client_certificates: required}\n"
        + "access:\n  - {from: somebody, to: reviews}\n  - {from: '*', to: reveiws}\n"
    )
    assert [c for c in codes(spec) if c.startswith("E2")] == ["E205"]


def test_unknown_monitored_service() -> None:
    """E206 for alerts and SLOs."""
    spec = ONE_SERVICE + (
        "monitoring:\n  alerts:\n"
        "    - {name: a, service: nope, when: 'error_rate > 1%', severity: page}\n"
        "  slos:\n    - {name: s, service: reviewz, objective: 99, window: 30d}\n"
    )
    diags = diagnose(spec)
    assert [d.code for d in diags] == ["E206", "E206"]
    assert diags[0].message == "alert 'a' watches unknown service 'nope'"
    assert diags[1].hint == "did you mean 'reviews'?"


def test_unknown_backup() -> None:
    """E207: failover.backup names a service that does not exist."""
    spec = ONE_SERVICE + "    failover: {backup: reviews-dr}\n    outlier_detection: {}\n"
    (diag,) = diagnose(spec)
    assert diag.code == "E207"
    assert diag.message == "service 'reviews' fails over to unknown service 'reviews-dr'"
