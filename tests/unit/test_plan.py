"""plan.to_tables: effective values, built-in defaults, Sloth burn windows, order invariance."""

from __future__ import annotations

import random

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from meshgen.plan import PAGE_WINDOWS, TICKET_WINDOWS, burn_windows, to_tables
from meshgen.runtime import tables as t
from tests.unit.h2_mesh import document, mesh_of

FULL = """
version: 1
mesh: {name: shop, domain: mesh.test}
admin: 127.0.0.1:0
defaults:
  timeout: 10s
  retries: {attempts: 2, on: [5xx, reset], backoff: {base: 10ms, max: 100ms}}
  health_check: {http: {path: /healthz, expected_statuses: [200, 204]}, interval: 2s}
  load_balancer: {policy: least_request, choice_count: 3}
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081, zone: a, labels: {version: v1, app: reviews}}
        - {address: "[::1]:9082", weight: 3, zone: b, labels: {version: v2}}
    subsets:
      v2: {labels: {version: v2}}
      v1: {labels: {version: v1}}
    outlier_detection: {consecutive_5xx: 3}
    rate_limit: {requests_per_second: 50, burst: 100}
    failover: {zones: [a, b], panic_threshold: 40, backup: dr}
    tls: {mode: simple, ca: ca.pem, sni: reviews.mesh.test, subject_alt_names: [spiffe://shop/reviews]}
  dr:
    discovery: {dns: {name: reviews-dr, refresh: 10s}}
    load_balancer: {policy: ring_hash, hash_on: {header: X-User}}
routes:
  - name: jason
    match:
      host: reviews
      path_prefix: /
      headers: {end-user: {exact: jason}, x-b: {present: true}}
    to: [{service: reviews, subset: v2}]
    timeout: 1s
    retries: {per_try_timeout: 250ms}
  - name: split
    match: {host: [reviews, reviews.mesh.test], methods: [GET]}
    to: [{service: reviews, subset: v1, weight: 90}, {service: dr, weight: 10}]
    fault: {abort: {status: 503, percent: 1}}
    headers: {response: {set: {x-b: "2", x-a: "1"}, remove: [Server]}}
listeners:
  - {name: edge, address: 127.0.0.1:0, routes: [split, jason]}
  - {name: all, address: 127.0.0.1:0}
access: []
monitoring:
  alerts:
    - {name: reviews-errors, service: reviews, when: "error_rate > 5%", for: 2m, severity: page}
  slos:
    - {name: reviews-availability, service: reviews, objective: 99.9, window: 30d}
"""


def tables() -> t.Tables:
    return to_tables(mesh_of(FULL))


def test_clusters_sorted_with_effective_policy() -> None:
    """Clusters come sorted by name with merged policy and per_try = timeout."""
    result = tables()
    assert [c.name for c in result.clusters] == ["dr", "reviews"]
    dr, reviews = result.clusters
    assert dr.discovery == t.DnsDiscovery("_http._tcp.reviews-dr.mesh.test", "SRV", None, 10.0)
    assert dr.load_balancer == t.LoadBalancer("ring_hash", 3, hash_header="x-user")
    assert [s.name for s in reviews.subsets] == ["v1", "v2"]
    assert reviews.discovery == t.StaticDiscovery(
        (
            t.Endpoint("127.0.0.1", 9081, 1, "a", (("app", "reviews"), ("version", "v1"))),
            t.Endpoint("::1", 9082, 3, "b", (("version", "v2"),)),
        )
    )
    assert reviews.timeout_s == 10.0
    assert reviews.retries == t.RetryPolicy(2, 10.0, ("5xx", "reset"), 0.01, 0.1)
    assert reviews.rate_limit == t.RateLimit(50.0, 100)
    assert reviews.failover == t.Failover(("a", "b"), 40.0, "dr")


def test_targets_carry_route_merged_policy() -> None:
    """Each Target has its own merged timeout and retries."""
    jason, split = tables().routes
    (target,) = jason.to
    assert (target.service, target.subset, target.weight) == ("reviews", "v2", 100)
    assert target.timeout_s == 1.0
    assert target.retries == t.RetryPolicy(2, 0.25, ("5xx", "reset"), 0.01, 0.1)
    first, second = split.to
    assert (first.weight, second.weight) == (90, 10)
    assert first.retries is not None and first.retries.per_try_timeout_s == 10.0
    assert split.response_headers == t.HeaderOps((("x-a", "1"), ("x-b", "2")), ("server",))
    assert split.fault == t.Fault(abort_status=503, abort_percent=1.0)
    assert jason.match.headers == (
        t.HeaderMatch("end-user", "exact", "jason"),
        t.HeaderMatch("x-b", "present"),
    )


def test_listeners_serve_routes_in_table_order() -> None:
    """A listener's routes follow the route table, whatever order it lists them in."""
    edge, every = tables().listeners
    assert edge.routes == ("jason", "split") and every.routes == ("jason", "split")
    assert (edge.host, edge.port) == ("127.0.0.1", 0)


def test_side_tables() -> None:
    """Health checks, outlier detection and client TLS only for services that have them."""
    result = tables()
    assert list(result.health_checks) == ["dr", "reviews"]
    assert result.health_checks["reviews"] == t.HealthCheck("http", "/healthz", (200, 204), 2.0)
    assert result.outlier_detection == {"reviews": t.OutlierDetection(consecutive_5xx=3)}
    assert list(result.client_tls) == ["reviews"]
    assert result.client_tls["reviews"].subject_alt_names == ("spiffe://shop/reviews",)
    assert result.alerts == (
        t.Alert("reviews-errors", "reviews", "error_rate", ">", 0.05, 120.0, "page"),
    )
    assert result.mesh == t.MeshInfo("shop", "mesh.test", "127.0.0.1", 0)


def test_default_mesh_tables() -> None:
    """No routes/listeners: a route per service and the edge listener with all of them."""
    result = to_tables(mesh_of("services:\n  b: {discovery: {static: [{address: 127.0.0.1:1}]}}\n"))
    (route,) = result.routes
    assert route.match.hosts == ("b", "b.mesh.test")
    assert route.to == (t.Target("b", None, 100, 15.0, 60.0, None),)
    assert result.listeners == (t.Listener("edge", "127.0.0.1", 15001, ("b",)),)
    assert (result.mesh.admin_host, result.mesh.admin_port) == ("127.0.0.1", 15000)


def test_slo_burn_windows_for_30_days_are_exact() -> None:
    """30d reproduces the SRE-workbook factors 14.4/6 (page) and 3/1 (ticket) exactly."""
    (slo,) = tables().slos
    assert slo.page == (t.BurnWindow(3600.0, 300.0, 14.4), t.BurnWindow(21600.0, 1800.0, 6.0))
    assert slo.ticket == (t.BurnWindow(86400.0, 7200.0, 3.0), t.BurnWindow(259200.0, 21600.0, 1.0))


@pytest.mark.parametrize(("days", "page"), [(7, 3.36), (28, 13.44), (90, 43.2)])
def test_burn_windows_scale_with_the_window(days: int, page: float) -> None:
    """factor = budget share x W / long window (2% of the budget in 1h for the first page pair)."""
    assert burn_windows(days * 86400, PAGE_WINDOWS)[0].factor == pytest.approx(page)
    assert burn_windows(days * 86400, TICKET_WINDOWS)[1].factor == pytest.approx(0.1 * days / 3)


def _shuffle(value: object, rng: random.Random) -> object:
    """Reorder every mapping's keys (lists keep their order: it means something)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffle(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffle(v, rng) for v in value]
    return value


@given(st.randoms(use_true_random=False))
def test_tables_do_not_depend_on_mapping_key_order(rng: random.Random) -> None:
    """Shuffling the key order of every mapping in mesh.yaml yields identical tables."""
    data = document(FULL).data  # YAML 1.2: the key `on` stays a string
    shuffled = yaml.safe_dump(_shuffle(data, rng), sort_keys=False)
    assert to_tables(mesh_of(shuffled)) == tables()


BUDGETS = """
services:
  web:
    discovery: {static: [{address: 127.0.0.1:9081}]}
    retries: {attempts: 1, budget: {ratio: 0.5}}
routes:
  - {name: tight, match: {path_prefix: /t}, to: [{service: web}],
     retries: {budget: {min_per_second: 1}}}
  - {name: loose, match: {path_prefix: /l}, to: [{service: web}], retries: {attempts: 2}}
  - {name: plain, match: {path_prefix: /}, to: [{service: web}]}
"""


def test_a_route_that_writes_its_own_budget_names_its_pool() -> None:
    """Only a route that wrote `retries.budget` gets `budget_route`; the others draw from the
    service's pool, whatever the route order."""
    routes = {r.name: r.to[0].retries for r in to_tables(mesh_of(BUDGETS)).routes}
    tight, loose, plain = routes["tight"], routes["loose"], routes["plain"]
    assert tight is not None and loose is not None and plain is not None
    assert (tight.budget_route, tight.budget_ratio) == ("tight", 0.5)
    assert tight.budget_min_per_second == 1
    assert (loose.budget_route, loose.budget_ratio, loose.budget_min_per_second) == (None, 0.5, 10)
    assert plain.budget_route is None
