"""The typed model: built-in defaults, merge order and the origin of every effective value."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from meshgen import model
from meshgen.model import BUILT_IN, Origin
from meshgen.runtime import tables as t
from tests.unit.h2_mesh import mesh_of

MIRRORED = (
    model.LoadBalancer,
    model.HealthCheck,
    model.OutlierDetection,
    model.CircuitBreaker,
    model.RateLimit,
    model.HeaderMatch,
    model.Match,
    model.Fault,
    model.Rewrite,
    model.HeaderOps,
    model.Redirect,
    model.ServerTls,
    model.Limits,
)

LAYERED = """
defaults:
  timeout: 10s
  load_balancer: {policy: least_request, choice_count: 3}
  retries: {attempts: 1, backoff: {base: 10ms}}
  health_check: {http: {path: /healthz}, interval: 2s}
  tls: {mode: simple, ca: ca.pem}
services:
  reviews:
    discovery: {static: [{address: 127.0.0.1:9081}]}
    load_balancer: {policy: random}
    retries: {attempts: 2, backoff: {max: 1s}}
    health_check: {tcp: {}}
    tls: {sni: reviews.mesh.test}
  ratings:
    discovery: {static: [{address: 127.0.0.1:9082}]}
routes:
  - name: reviews
    to: [{service: reviews}]
    timeout: 2s
    retries: {per_try_timeout: 500ms}
"""


def test_builtin_defaults_follow_the_spec() -> None:
    """A bare service gets the documented built-in policy, every value marked built-in."""
    mesh = mesh_of("services:\n  a:\n    discovery: {static: [{address: 127.0.0.1:1}]}\n")
    service = mesh.services["a"]
    assert service.load_balancer.policy == "round_robin"
    assert service.load_balancer.choice_count == 2
    assert service.health_check is None and service.outlier_detection is None
    assert service.rate_limit is None and service.call.retries is None
    assert (service.connect_timeout_s, service.call.timeout_s, service.call.idle_timeout_s) == (
        5.0,
        15.0,
        60.0,
    )
    assert service.circuit_breaker.max_requests == 1024
    assert service.failover.panic_threshold == 50.0
    assert (service.tls.mode, service.tls.min_version, service.tls.verify) == (
        "disable",
        "1.2",
        True,
    )
    assert service.origin("timeout") == BUILT_IN
    assert service.origin("load_balancer.policy") == BUILT_IN


def test_service_overrides_defaults_key_by_key() -> None:
    """Mappings merge key by key; the service wins where it writes a value."""
    service = mesh_of(LAYERED).services["reviews"]
    assert service.load_balancer.policy == "random"
    assert service.load_balancer.choice_count == 3
    assert service.origin("load_balancer.policy") == Origin(
        "service", ("services", "reviews", "load_balancer", "policy"), "mesh.yaml"
    )
    assert service.origin("load_balancer.choice_count") == Origin(
        "defaults", ("defaults", "load_balancer", "choice_count"), "mesh.yaml"
    )
    retries = service.call.retries
    assert retries is not None
    assert (retries.attempts, retries.backoff_base_s, retries.backoff_max_s) == (2, 0.01, 1.0)
    assert retries.on == ("connect-failure", "reset", "5xx")
    assert service.origin("retries.on") == BUILT_IN
    assert service.origin("retries.backoff.base").kind == "defaults"
    assert service.origin("retries.backoff.max").kind == "service"
    assert service.call.timeout_s == 10.0 and service.origin("timeout").kind == "defaults"


def test_health_check_kind_replaces_the_other_kind() -> None:
    """http and tcp checks are alternatives: a service's tcp replaces the defaults' http."""
    mesh = mesh_of(LAYERED)
    reviews, ratings = mesh.services["reviews"], mesh.services["ratings"]
    assert reviews.health_check is not None and reviews.health_check.kind == "tcp"
    assert reviews.health_check.interval_s == 2.0
    assert "health_check.http" not in reviews.origins
    assert "health_check.http.path" not in reviews.origins
    assert ratings.health_check is not None
    assert (ratings.health_check.kind, ratings.health_check.path) == ("http", "/healthz")


def test_tls_merges_defaults_with_service_fields() -> None:
    """tls.mode and tls.ca come from defaults, tls.sni from the service."""
    service = mesh_of(LAYERED).services["reviews"]
    assert (service.tls.mode, service.tls.ca, service.tls.sni) == (
        "simple",
        "ca.pem",
        "reviews.mesh.test",
    )
    assert service.origin("tls.ca") == Origin("defaults", ("defaults", "tls", "ca"), "mesh.yaml")


def test_route_policy_overrides_the_destination_service() -> None:
    """A destination's call policy is built-in < defaults < service < route."""
    mesh = mesh_of(LAYERED)
    call = mesh.routes[0].to[0].call
    assert call is not None
    assert call.timeout_s == 2.0 and call.origin("timeout").kind == "route"
    assert call.retries is not None
    assert call.retries.attempts == 2 and call.origin("retries.attempts").kind == "service"
    assert call.retries.per_try_timeout_s == 0.5
    assert call.origin("retries.per_try_timeout") == Origin(
        "route", ("routes", 0, "retries", "per_try_timeout"), "mesh.yaml"
    )
    assert call.retries.backoff_base_s == 0.01
    assert call.origin("retries.backoff.base").kind == "defaults"
    # the service itself is unchanged by the route
    assert mesh.services["reviews"].call.timeout_s == 10.0


def test_defaults_are_not_mutated_by_services() -> None:
    """Overlaying one service never leaks into the next (shared defaults are copied)."""
    mesh = mesh_of(LAYERED)
    ratings = mesh.services["ratings"]
    assert ratings.load_balancer.policy == "least_request"
    assert ratings.call.retries is not None and ratings.call.retries.backoff_max_s == 0.25
    assert ratings.tls.sni is None


def test_objects_keep_their_source_paths() -> None:
    """Every object knows its node, so checks can point at it."""
    mesh = mesh_of(LAYERED)
    reviews = mesh.services["reviews"]
    assert reviews.path == ("services", "reviews")
    assert reviews.discovery.path == ("services", "reviews", "discovery", "static")
    assert mesh.routes[0].path == ("routes", 0)
    assert mesh.routes[0].to[0].path == ("routes", 0, "to", 0)


@pytest.mark.parametrize("plain", MIRRORED, ids=lambda c: c.__name__)
def test_a_plain_value_mirrors_its_table_type_field_for_field(plain: Any) -> None:
    """plan makes the table value by unpacking the model's (``t.LoadBalancer(*value)``): the
    fields must be the table type's, in its order (mypy checks each position's type)."""
    table = getattr(t, plain.__name__)
    assert plain._fields == tuple(f.name for f in dataclasses.fields(table) if f.init)
