"""W301: a route that an earlier route always matches first. No false positives."""

from __future__ import annotations

import pytest

from meshgen.checks.shadowing import covers
from meshgen.runtime.tables import HeaderMatch, Match
from tests.unit.h2_mesh import ONE_SERVICE, codes, diagnose


def two_routes(first: str, second: str, listeners: str = "") -> list[str]:
    spec = (
        ONE_SERVICE
        + "routes:\n"
        + f"  - {{name: first, match: {first}, to: [{{service: reviews}}]}}\n"
        + f"  - {{name: second, match: {second}, to: [{{service: reviews}}]}}\n"
        + listeners
    )
    return codes(spec)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{}", "{}"),
        ("{}", "{host: a, path_prefix: /x, methods: [GET]}"),
        ("{host: [a, b]}", "{host: a}"),
        ("{path_prefix: /api}", "{path_prefix: /api/v1}"),
        ("{path_prefix: /api/}", "{path_exact: /api/x}"),
        ("{path_prefix: /api}", "{path_exact: /api}"),
        ("{methods: [GET, POST]}", "{methods: [GET]}"),
        ("{headers: {x-user: {present: true}}}", "{headers: {x-user: {exact: jason}}}"),
        (
            "{headers: {x-user: {prefix: ja}}}",
            "{headers: {x-user: {exact: jason}, x-b: {present: true}}}",
        ),
        ("{path_regex: '/a/[0-9]+'}", "{path_exact: /a/12}"),
        ("{path_exact: /a}", "{path_exact: /a}"),
    ],
)
def test_shadowed(first: str, second: str) -> None:
    """Every request the second route matches also matches the first."""
    assert two_routes(first, second) == ["W301"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{host: a}", "{}"),
        ("{host: a}", "{host: [a, b]}"),
        ("{path_prefix: /api}", "{path_prefix: /apix}"),
        ("{path_prefix: /api}", "{path_prefix: /}"),
        ("{path_prefix: /api/}", "{path_exact: /api}"),
        ("{path_prefix: /api}", "{path_regex: '/api/.*'}"),
        ("{path_exact: /a}", "{path_prefix: /a}"),
        ("{methods: [GET]}", "{}"),
        ("{methods: [GET]}", "{methods: [GET, POST]}"),
        ("{headers: {x-user: {exact: jason}}}", "{}"),
        ("{headers: {x-user: {exact: jason}}}", "{headers: {x-user: {prefix: jason}}}"),
        ("{headers: {x-user: {regex: 'j.*'}}}", "{headers: {x-user: {regex: 'ja.*'}}}"),
        ("{path_regex: '/a/[0-9]+'}", "{path_exact: /a/b}"),
    ],
)
def test_not_shadowed(first: str, second: str) -> None:
    """Some request the second route matches escapes the first: no warning."""
    assert two_routes(first, second) == []


def test_only_when_every_listener_serving_it_tries_the_earlier_route() -> None:
    """A route served where the earlier one is not is reachable there."""
    listeners = (
        "listeners:\n  - {name: a, address: 127.0.0.1:0, routes: [first, second]}\n"
        "  - {name: b, address: 127.0.0.1:0, routes: [second]}\n"
    )
    assert two_routes("{}", "{}", listeners) == []
    both = "listeners:\n  - {name: a, address: 127.0.0.1:0, routes: [second, first]}\n"
    assert two_routes("{}", "{}", both) == ["W301"]


def test_message_names_both_routes() -> None:
    """The warning points at the later route's name and relates the earlier one."""
    spec = (
        ONE_SERVICE
        + "routes:\n  - {name: all, to: [{service: reviews}]}\n"
        + "  - {name: api, match: {path_prefix: /api}, to: [{service: reviews}]}\n"
    )
    (diag,) = diagnose(spec)
    assert diag.severity == "warning"
    assert (
        diag.message
        == "route 'api' is never used: route 'all' above it matches every request it matches"
    )
    assert diag.related[0].message == "this route matches first"


def test_covers_is_reflexive_for_header_sets() -> None:
    """A match covers itself (same hosts, path, methods, headers)."""
    match = Match(("a",), "prefix", "/x", ("GET",), (HeaderMatch("h", "regex", "v+"),))
    assert covers(match, match)


def test_many_routes_are_checked_quickly() -> None:
    """20,000 host-distinct routes: the candidate index keeps the check near-linear."""
    import time

    services = "services:\n" + "".join(
        f"  s{i}: {{discovery: {{static: [{{address: 127.0.0.1:{1000 + i}}}]}}}}\n"
        for i in range(2000)
    )
    routes = "routes:\n" + "".join(
        f"  - {{name: r{i}, match: {{host: s{i % 2000}, path_prefix: /p{i}}},"
        f" to: [{{service: s{i % 2000}}}]}}\n"
        for i in range(20000)
    )
    start = time.perf_counter()
    assert codes(services + routes) == []
    assert time.perf_counter() - start < 20
