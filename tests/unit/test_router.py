"""Router: first match in file order on host/path/method/headers, weighted split."""

from __future__ import annotations

import math
import random

import pytest

from meshgen.runtime.policy.router import Router, normalize_host
from meshgen.runtime.tables import HeaderMatch, Listener, Match, Redirect, Route, Target


def target(service: str, weight: int = 100, subset: str | None = None) -> Target:
    return Target(service, subset, weight, 15.0, 60.0, None)


def route(name: str, match: Match, *to: Target) -> Route:
    return Route(name=name, match=match, to=to or (target(name),))


ROUTES = (
    route("jason", Match(hosts=("reviews",), headers=(HeaderMatch("end-user", "exact", "jason"),))),
    route("api-exact", Match(hosts=("reviews",), path_kind="exact", path="/api")),
    route("api", Match(hosts=("reviews", "reviews.mesh.test"), path="/api/", methods=("GET",))),
    route("re", Match(hosts=("reviews",), path_kind="regex", path=r"/item/[0-9]+")),
    route(
        "hdr",
        Match(headers=(HeaderMatch("x-p", "prefix", "ab"), HeaderMatch("x-r", "regex", "v[0-9]"))),
    ),
    route("present", Match(headers=(HeaderMatch("x-any", "present"),))),
    route("catchall", Match(hosts=("reviews",))),
)


@pytest.mark.parametrize(
    ("host", "path", "method", "hdrs", "expected"),
    [
        ("reviews", "/x", "GET", {"end-user": "jason"}, "jason"),
        ("REVIEWS:8080", "/x", "GET", {"end-user": "jason"}, "jason"),
        ("reviews.", "/x", "GET", {"end-user": "jasonx"}, "catchall"),
        ("reviews", "/api", "POST", {}, "api-exact"),
        ("reviews", "/api/v1", "GET", {}, "api"),
        ("Reviews.Mesh.Test.:80", "/api/v1", "GET", {}, "api"),
        ("reviews", "/api/v1", "POST", {}, "catchall"),
        ("reviews", "/item/42", "GET", {}, "re"),
        ("reviews", "/item/42x", "GET", {}, "catchall"),
        ("other", "/", "GET", {"x-p": "abc", "x-r": "v1"}, "hdr"),
        ("other", "/", "GET", {"x-p": "abc", "x-r": "v1x"}, None),
        ("other", "/", "GET", {"x-any": ""}, "present"),
        ("other", "/", "GET", {}, None),
        ("reviews", "/", "GET", {"x-any": "1"}, "present"),
    ],
)
def test_first_match(
    host: str, path: str, method: str, hdrs: dict[str, str], expected: str | None
) -> None:
    """The first route in file order whose every condition holds wins."""
    got = Router(ROUTES).match(host, path, method, hdrs.get)
    assert (got.route.name if got else None) == expected


def test_normalize_host() -> None:
    """Case, port and trailing dot are ignored; IPv6 brackets are removed."""
    assert normalize_host("Example.COM.:443") == "example.com"
    assert normalize_host("[::1]:15001") == "::1"
    assert normalize_host("::1") == "::1"


def test_listener_selects_routes_in_table_order() -> None:
    """A listener's list only selects routes; table order still decides."""
    lst = Listener("edge", "127.0.0.1", 0, routes=("catchall", "jason"))
    r = Router.for_listener(ROUTES, lst)
    assert [cr.route.name for cr in r.routes] == ["jason", "catchall"]


def test_redirect_route_has_no_target() -> None:
    """A redirect-only route picks no target."""
    r = Router([Route("r", Match(), redirect=Redirect("https://x/"))])
    cr = r.match("h", "/", "GET")
    assert cr is not None and r.pick(cr) is None


def test_split_within_four_sigma() -> None:
    """A 90/10 split over 10000 seeded picks stays within 4 sigma; weight 0 never picked."""
    rt = route("split", Match(), target("a", 90), target("b", 10), target("c", 0))
    r = Router([rt], random.Random(7))
    cr = r.match("h", "/", "GET")
    assert cr is not None
    n = 10_000
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(n):
        t = r.pick(cr)
        assert t is not None
        counts[t.service] += 1
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(counts["b"] - n * 0.1) < 4 * sigma
    assert counts["c"] == 0


def test_chance_bounds() -> None:
    """0 percent never fires, 100 always."""
    r = Router([], random.Random(1))
    assert not any(r.chance(0) for _ in range(1000))
    assert all(r.chance(100) for _ in range(1000))
