"""Key-by-key merging of partial policy mappings (reference.md) and E116 when none completes.

The schema accepts a partial ``rate_limit`` or ``health_check`` at service and route level;
lowering merges the layers (built-in < defaults < service < route) and an incomplete result is
reported at the most specific layer, never guessed.
"""

from __future__ import annotations

import pytest

from meshgen.model import HealthCheck, RateLimit
from meshgen.schema import validate
from tests.unit.h2_mesh import codes, diagnose, document, mesh_of

SERVICE = "    discovery: {static: [{address: 127.0.0.1:9081}]}\n"


def test_service_overrides_only_burst_of_defaults() -> None:
    """defaults {rps: 10, burst: 20} + service {burst: 50} -> RateLimit(10, 50)."""
    text = (
        "defaults:\n  rate_limit: {requests_per_second: 10, burst: 20}\n"
        "services:\n  a:\n" + SERVICE + "    rate_limit: {burst: 50}\n"
    )
    assert validate(document(text)) == []
    assert mesh_of(text).services["a"].rate_limit == RateLimit(10.0, 50)


def test_service_overrides_only_the_health_check_interval() -> None:
    """defaults http /hz every 2s + service {interval: 5s} -> http /hz every 5s."""
    text = (
        "defaults:\n  health_check: {http: {path: /hz}, interval: 2s}\n"
        "services:\n  a:\n" + SERVICE + "    health_check: {interval: 5s}\n"
        "  b:\n" + SERVICE.replace("9081", "9082")
    )
    assert validate(document(text)) == []
    services = mesh_of(text).services
    assert services["a"].health_check == HealthCheck(
        "http", "/hz", (200,), 5.0, 1.0, 2, 3, "", None
    )
    assert services["b"].health_check == HealthCheck(
        "http", "/hz", (200,), 2.0, 1.0, 2, 3, "", None
    )


def test_a_layer_naming_tcp_replaces_http() -> None:
    """http and tcp are alternatives: the service's tcp replaces the defaults' http."""
    text = (
        "defaults:\n  health_check: {http: {path: /hz}, interval: 2s}\n"
        "services:\n  a:\n" + SERVICE + "    health_check: {tcp: {}}\n"
    )
    check = mesh_of(text).services["a"].health_check
    assert check is not None and (check.kind, check.interval_s) == ("tcp", 2.0)


def test_no_health_check_anywhere_stays_none() -> None:
    assert mesh_of("services:\n  a:\n" + SERVICE).services["a"].health_check is None


def test_route_rate_limit_merges_over_the_service_one() -> None:
    """A route's {burst: 5} takes requests_per_second from its service (and defaults)."""
    text = (
        "services:\n  a:\n" + SERVICE + "    rate_limit: {requests_per_second: 10, burst: 20}\n"
        "routes:\n  - name: r\n    to: [{service: a}]\n    rate_limit: {burst: 5}\n"
    )
    assert validate(document(text)) == []
    mesh = mesh_of(text)
    assert mesh.routes[0].rate_limit == RateLimit(10.0, 5)
    assert mesh.services["a"].rate_limit == RateLimit(10.0, 20)


def test_route_rate_limit_from_defaults() -> None:
    text = (
        "defaults:\n  rate_limit: {requests_per_second: 7}\n"
        "services:\n  a:\n"
        + SERVICE
        + "routes:\n  - name: r\n    to: [{service: a}]\n    rate_limit: {burst: 3}\n"
    )
    assert mesh_of(text).routes[0].rate_limit == RateLimit(7.0, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "services:\n  a:\n" + SERVICE + "    rate_limit: {burst: 50}\n",
            "rate_limit of service 'a' has no requests_per_second (not set here nor in defaults)",
        ),
        (
            "services:\n  a:\n" + SERVICE + "    health_check: {interval: 5s}\n",
            "health_check of service 'a' has none of http, tcp and grpc (not set here nor in "
            "defaults)",
        ),
        (
            "services:\n  a:\n"
            + SERVICE
            + "routes:\n  - name: r\n    to: [{service: a}]\n    rate_limit: {burst: 5}\n",
            "rate_limit of route 'r' has no requests_per_second (not set here nor on service "
            "'a' or in defaults)",
        ),
    ],
)
def test_incomplete_after_merging_is_e116_at_the_most_specific_layer(
    text: str, message: str
) -> None:
    doc = document(text)
    assert validate(doc) == []
    (diag,) = diagnose(text)
    assert (diag.code, diag.message) == ("E116", message)
    field = message.split(" ", 1)[0]
    if "route" in message:
        assert diag.span == doc.key_span(("routes", 0, field))
    else:
        assert diag.span == doc.key_span(("services", "a", field))


def test_route_services_that_disagree_need_the_field_on_the_route() -> None:
    text = (
        "services:\n  a:\n" + SERVICE + "    rate_limit: {requests_per_second: 3}\n"
        "  b:\n" + SERVICE.replace("9081", "9082") + "    rate_limit: {requests_per_second: 4}\n"
        "routes:\n  - name: r\n    to: [{service: a, weight: 50}, {service: b, weight: 50}]\n"
        "    rate_limit: {burst: 5}\n"
    )
    (diag,) = diagnose(text)
    assert diag.code == "E116" and "('a' 3, 'b' 4)" in diag.message
    fixed = text.replace("{burst: 5}", "{burst: 5, requests_per_second: 9}")
    assert codes(fixed) == [] and mesh_of(fixed).routes[0].rate_limit == RateLimit(9.0, 5)


@pytest.mark.parametrize(
    ("defaults", "code"),
    [
        ("  rate_limit: {burst: 5}\n", "E108"),
        ("  health_check: {interval: 5s}\n", "E109"),
    ],
)
def test_defaults_must_be_complete(defaults: str, code: str) -> None:
    """defaults is the lowest written layer: nothing below it can complete it."""
    (diag,) = validate(document("defaults:\n" + defaults + "services:\n  a:\n" + SERVICE))
    assert diag.code == code


def test_http_and_tcp_in_one_layer_conflict() -> None:
    text = "services:\n  a:\n" + SERVICE + "    health_check: {http: {}, tcp: {}}\n"
    (diag,) = validate(document(text))
    assert diag.code == "E111" and "'tcp' cannot be combined with 'http'" in diag.message
