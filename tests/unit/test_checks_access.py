"""E504, W503: access rules need an identity-checking listener and must cover whole splits."""

from __future__ import annotations

import pytest

from tests.unit.h2_mesh import codes, diagnose

SPLIT = """
services:
  reviews: {discovery: {static: [{address: 127.0.0.1:1}]}}
  reviews-v2: {discovery: {static: [{address: 127.0.0.1:2}]}}
  catalog: {discovery: {static: [{address: 127.0.0.1:3}]}}
routes:
  - name: split
    to: [{service: reviews, weight: 90}, {service: reviews-v2, weight: 10}]
  - {name: catalog, match: {host: catalog}, to: [{service: catalog}]}
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null, client_certificates: CERTS}
"""


def spec(certs: str, rules: str) -> str:
    return SPLIT.replace("CERTS", certs) + "access:\n" + rules


def access_codes(certs: str, rules: str) -> list[str]:
    return [c for c in codes(spec(certs, rules)) if c in ("E504", "W503")]


@pytest.mark.parametrize(
    ("certs", "expected"), [("required", []), ("optional", []), ("none", ["E504"])]
)
def test_access_needs_a_listener_with_client_certificates(certs: str, expected: list[str]) -> None:
    """Rules only apply where callers present certificates."""
    assert access_codes(certs, "  - {from: web, to: catalog}\n") == expected


def test_access_without_listeners_is_an_error() -> None:
    """The implied plain edge listener accepts no certificates."""
    text = (
        "services:\n  a: {discovery: {static: [{address: 127.0.0.1:1}]}}\n"
        "access:\n  - {from: b, to: a}\n"
    )
    (diag,) = diagnose(text)
    assert (
        diag.code == "E504"
        and diag.message == "access rules are set but no listener accepts client certificates"
    )


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ("  - {from: web, to: reviews}\n  - {from: web, to: reviews-v2}\n", []),
        ("  - {from: web, to: catalog}\n", []),
        ("  - {from: web, to: reviews}\n", ["W503"]),
        ("  - {from: '*', to: reviews-v2}\n  - {from: web, to: reviews}\n", ["W503"]),
        ("  - {from: '*', to: reviews-v2}\n  - {from: '*', to: reviews}\n", []),
        ("  - {from: '*', to: reviews}\n", ["W503"]),
        ("  - {from: web, to: reviews}\n  - {from: api, to: reviews-v2}\n", ["W503", "W503"]),
    ],
)
def test_split_routes_must_be_allowed_whole(rules: str, expected: list[str]) -> None:
    """A caller allowed some but not all destinations of a split gets 403: a warning."""
    assert access_codes("required", rules) == expected


def test_split_warning_message() -> None:
    """The warning names the caller, the allowed and the missing destinations."""
    (diag,) = [
        d for d in diagnose(spec("required", "  - {from: web, to: reviews}\n")) if d.code == "W503"
    ]
    assert diag.message == (
        "access rules let 'web' call 'reviews' but not 'reviews-v2', which route 'split' also "
        "sends traffic to"
    )
    assert diag.related[0].message == "route 'split' splits traffic here"
