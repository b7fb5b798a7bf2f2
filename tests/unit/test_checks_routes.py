"""E301-E306 and W302: route weights, redirect vs to, rewrite, regexes, names, retries."""

from __future__ import annotations

import pytest

from tests.unit.h2_mesh import ONE_SERVICE, codes, diagnose

TWO = """
services:
  reviews: {discovery: {static: [{address: 127.0.0.1:9081}]}}
  ratings: {discovery: {static: [{address: 127.0.0.1:9082}]}}
routes:
"""


def routes(text: str) -> list[str]:
    return codes(TWO + text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  - {name: r, to: [{service: reviews}]}\n", []),
        ("  - {name: r, to: [{service: reviews, weight: 100}]}\n", []),
        (
            "  - {name: r, to: [{service: reviews, weight: 60}, {service: ratings, weight: 40}]}\n",
            [],
        ),
        (
            "  - {name: r, to: [{service: reviews, weight: 60}, {service: ratings, weight: 30}]}\n",
            ["E301"],
        ),
        ("  - {name: r, to: [{service: reviews, weight: 50}]}\n", ["E301"]),
        ("  - {name: r, to: [{service: reviews}, {service: ratings, weight: 100}]}\n", ["E302"]),
        ("  - {name: r, to: [{service: reviews}, {service: ratings}]}\n", ["E302", "E302"]),
    ],
)
def test_weights(text: str, expected: list[str]) -> None:
    """Weights sum to 100; only a single destination may omit its weight."""
    assert routes(text) == expected


def test_weight_message() -> None:
    """E301 shows the sum and its terms."""
    (diag,) = diagnose(
        TWO
        + "  - {name: r, to: [{service: reviews, weight: 60}, {service: ratings, weight: 30}]}\n"
    )
    assert diag.message == "weights of route 'r' sum to 90 (60 + 30), not 100"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  - {name: r, redirect: {location: 'https://x/'}}\n", []),
        ("  - {name: r, redirect: {location: 'https://x/'}, to: [{service: reviews}]}\n", ["E303"]),
        ("  - {name: r, to: []}\n", ["E303"]),
    ],
)
def test_redirect_and_to_are_exclusive(text: str, expected: list[str]) -> None:
    """A route has exactly one of `to` and `redirect`."""
    assert routes(text) == expected


@pytest.mark.parametrize(
    ("match", "expected"),
    [("{path_prefix: /api/}", []), ("{path_exact: /api}", ["E304"]), ("{}", ["E304"])],
)
def test_rewrite_prefix_needs_match_prefix(match: str, expected: list[str]) -> None:
    """rewrite.path_prefix only with match.path_prefix (also not with the implied '/')."""
    text = (
        f"  - {{name: r, match: {match}, to: [{{service: reviews}}],"
        " rewrite: {path_prefix: /v2/}}\n"
    )
    assert routes(text) == expected


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ("{path_regex: '/api/[0-9]+'}", []),
        ("{path_regex: '/api/(['}", ["E305"]),
        ("{headers: {X-Id: {regex: '*x'}}}", ["E305"]),
        ("{headers: {x-id: {regex: 'a|b'}}}", []),
    ],
)
def test_regexes_must_compile(match: str, expected: list[str]) -> None:
    """path_regex and header regexes are compiled at build time."""
    assert routes(f"  - {{name: r, match: {match}, to: [{{service: reviews}}]}}\n") == expected


def test_header_regex_error_points_at_the_regex() -> None:
    """The span is the regex value even when the header name is written in upper case."""
    (diag,) = diagnose(
        TWO
        + "  - name: r\n    match: {headers: {X-Id: {regex: '*x'}}}\n    to: [{service: reviews}]\n"
    )
    assert diag.span.line == 9 and diag.span.col > 30
    assert diag.message.startswith("regex '*x' of route 'r' does not compile: ")


def test_duplicate_route_names() -> None:
    """E306 at the second name, related to the first."""
    diags = diagnose(
        TWO + "  - {name: r, to: [{service: reviews}]}\n  - {name: r, to: [{service: ratings}]}\n"
    )
    (diag,) = [d for d in diags if d.code == "E306"]
    assert diag.span.line == 9 and diag.related[0].span.line == 8


RETRY = """
defaults:
  retries: {attempts: 2, per_try_timeout: 1s}
services:
  reviews: {discovery: {static: [{address: 127.0.0.1:9081}]}, timeout: 2s}
  ratings: {discovery: {static: [{address: 127.0.0.1:9082}]}, timeout: 2s}
  details: {discovery: {static: [{address: 127.0.0.1:9083}]}, timeout: 3s}
"""


def test_retries_exceeding_timeout_warn_once_per_setting() -> None:
    """3 tries x 1s > 2s warns once at the shared defaults value; 3 x 1s <= 3s is fine."""
    diags = diagnose(RETRY)
    assert [d.code for d in diags] == ["W302"]
    assert diags[0].severity == "warning"
    assert (
        diags[0].message
        == "3 tries x per_try_timeout 1s = 3s exceed the timeout 2s of service 'ratings'"
    )
    assert diags[0].span.line == 5


def test_retries_without_per_try_timeout_do_not_warn() -> None:
    """per_try_timeout defaults to the timeout itself: nothing to warn about."""
    assert codes(RETRY.replace(", per_try_timeout: 1s", "")) == []


def test_route_retry_override_is_checked() -> None:
    """A route's per_try_timeout is checked against the route-merged timeout."""
    spec = RETRY.replace("  retries: {attempts: 2, per_try_timeout: 1s}\n", "  timeout: 1s\n") + (
        "routes:\n  - name: r\n    to: [{service: details}]\n"
        "    retries: {attempts: 3, per_try_timeout: 1s}\n"
    )
    diags = diagnose(spec)
    assert [d.code for d in diags] == ["W302"]
    assert "route 'r' to 'details'" in diags[0].message


def test_route_no_listener_serves_warns() -> None:
    """W303 when every listener lists its routes and none lists the route."""
    text = ONE_SERVICE + (
        "routes:\n"
        "  - {name: a, match: {host: a}, to: [{service: reviews}]}\n"
        "  - {name: b, match: {host: b}, to: [{service: reviews}]}\n"
        "listeners:\n"
        "  - {name: one, address: 127.0.0.1:15001, routes: [a]}\n"
        "  - {name: two, address: 127.0.0.1:15002, routes: [a]}\n"
    )
    (diag,) = diagnose(text)
    assert diag.code == "W303" and diag.message.startswith("route 'b' is served by no listener")
    assert diag.span.line == 11
    assert codes(text.replace("routes: [a]}\n", "}\n", 1)) == []  # `one` serves every route


def test_unserved_route_is_quiet_while_a_listener_names_an_unknown_route() -> None:
    """With a typo in a listener's routes (E204) the unserved route is probably the one meant."""
    text = ONE_SERVICE + (
        "routes:\n  - {name: a, match: {host: a}, to: [{service: reviews}]}\n"
        "listeners:\n  - {name: one, address: 127.0.0.1:15001, routes: [aa]}\n"
    )
    assert codes(text) == ["E204"]
