"""E504, E506, W503, W504: access rules, judged as the runtime judges requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.plan import to_tables
from meshgen.runtime.policy.access import AccessPolicy
from tests.unit.h2_mesh import codes, diagnose, mesh_of

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
        "access rules let 'web' call 'reviews' but not 'reviews-v2', which route 'split' can "
        "also send traffic to"
    )
    assert diag.related[0].message == "route 'split' sends traffic to 'reviews-v2' here"


# --- W503 beyond splits: mirrors, failover backups, single-target routes -------------------

REACH = """
services:
  pay:
    discovery: {static: [{address: 127.0.0.1:1}]}
    failover: {backup: pay-dr}
    outlier_detection: {}
  pay-dr: {discovery: {static: [{address: 127.0.0.1:2}]}}
  audit: {discovery: {static: [{address: 127.0.0.1:3}]}}
routes:
  - {name: charge, to: [{service: pay}], mirror: {service: audit, percent: 10}}
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null, client_certificates: required}
access:
"""


def w503(rules: str, base: str = REACH) -> list[tuple[str, list[str]]]:
    return [
        (d.message, [r.message for r in d.related])
        for d in diagnose(base + rules)
        if d.code == "W503"
    ]


def test_mirror_and_backup_of_a_single_target_route() -> None:
    """The mirror and the target's failover backup count as destinations too."""
    ((message, notes),) = w503("  - {from: web, to: pay}\n")
    assert message == (
        "access rules let 'web' call 'pay' but not 'pay-dr', 'audit', which route 'charge' can "
        "also send traffic to"
    )
    assert notes == ["'pay' fails over to 'pay-dr' here", "route 'charge' mirrors traffic here"]
    everything = (
        "  - {from: web, to: pay}\n  - {from: web, to: pay-dr}\n  - {from: web, to: audit}\n"
    )
    assert w503(everything) == []


def test_disjoint_grants_on_the_destinations_warn() -> None:
    """Every destination allows something, but never the same request: 403 for everything."""
    rules = (
        "  - {from: web, to: pay, methods: [POST]}\n"
        "  - {from: web, to: pay-dr, methods: [GET]}\n"
        "  - {from: web, to: audit}\n"
    )
    ((message, notes),) = w503(rules)
    assert message == (
        "access rules let 'web' call each service route 'charge' can reach, but no method and "
        "path is allowed by all of them"
    )
    assert notes == ["route 'charge' reaches 'pay', 'pay-dr', 'audit'"]
    nested = (
        "  - {from: web, to: pay, paths: [/a]}\n"
        "  - {from: web, to: pay-dr, paths: [/a/b]}\n"
        "  - {from: web, to: audit}\n"
    )
    assert w503(nested) == []


def test_named_caller_covered_by_the_wildcard_is_not_repeated() -> None:
    """'web' has no rule of its own on the route's services: the '*' warning covers it."""
    rules = "  - {from: '*', to: pay}\n  - {from: web, to: other}\n"
    base = REACH.replace(
        "services:\n", "services:\n  other: {discovery: {static: [{address: 127.0.0.1:4}]}}\n"
    )
    found = w503(rules, base)
    assert [m.split(" but ")[0] for m, _ in found] == [
        "access rules let any caller ('*') call 'pay'"
    ]


def test_routes_not_served_on_a_checking_listener_are_not_judged() -> None:
    """Only routes of listeners that check callers are subject to the rules."""
    base = REACH.replace(
        "routes:\n",
        "routes:\n  - {name: dr, match: {host: dr}, to: [{service: pay-dr}]}\n",
    ).replace("access:\n", "  - {name: plain, address: 127.0.0.1:0, routes: [charge]}\naccess:\n")
    rules = "  - {from: web, to: pay}\n  - {from: web, to: pay-dr}\n"
    served_both = base.replace(
        "    address: 127.0.0.1:0\n    tls",
        "    address: 127.0.0.1:0\n    routes: [dr, charge]\n    tls",
    )
    served_dr = served_both.replace("routes: [dr, charge]", "routes: [dr]")
    assert codes(served_dr + rules) == []
    # (the plain listener serving `charge` too is W510: tests/unit/test_checks_analyses.py)
    assert [c for c in codes(served_both + rules)] == ["W510", "W503"]


# --- W504, E506 -----------------------------------------------------------------------------


def test_checking_listener_without_any_allowed_request_warns() -> None:
    """W504 at client_certificates, also when there are no access rules at all."""
    text = SPLIT.replace("CERTS", "optional")
    (diag,) = [d for d in diagnose(text) if d.code != "W301"]
    assert diag.code == "W504" and diag.severity == "warning"
    assert diag.message == (
        "listener 'edge' checks callers but no access rule allows any request on its routes: "
        "every request there gets 403"
    )
    assert diag.span.line == text.count("\n", 0, text.index("client_certificates")) + 3
    allowed = spec("required", "  - {from: web, to: catalog, methods: [GET]}\n")
    assert "W504" not in codes(allowed)
    assert "W504" not in codes(SPLIT.replace("CERTS", "none"))


def test_redirects_answer_every_admitted_caller_so_nothing_warns_about_them() -> None:
    """A redirect forwards nothing: no warning on a checking listener (W505 is retired), and
    W504 says its redirects are the exception, or stays silent when only redirects are served."""
    moved = "  - {name: moved, match: {path_prefix: /old/}, redirect: {location: /new/}}\n"
    allowed = spec("required", "  - {from: web, to: catalog}\n").replace(
        "routes:\n", "routes:\n" + moved
    )
    assert [d.code for d in diagnose(allowed) if d.code.startswith("W5")] == []
    nobody = SPLIT.replace("CERTS", "required").replace("routes:\n", "routes:\n" + moved)
    (diag,) = [d for d in diagnose(nobody) if d.code == "W504"]
    assert diag.message.endswith("every request there gets 403, except on its redirect routes")
    only = nobody.replace("address: 127.0.0.1:0\n", "address: 127.0.0.1:0\n    routes: [moved]\n")
    assert "W504" not in codes(only)


@pytest.mark.parametrize(
    ("path", "message", "hint"),
    [
        ("/a//b", "access path '/a//b' is not normalised", "write '/a/b'"),
        ("/a/./b/../c", "access path '/a/./b/../c' is not normalised", "write '/a/c'"),
        ("/%7Euser", "access path '/%7Euser' is not normalised", "write '/~user'"),
        ("/a%2fb", "access path '/a%2fb' is not normalised", "write '/a%2Fb'"),
        ("/a?x=1", "access path '/a?x=1' is not normalised", "write '/a'"),
        ("/a b", "access path '/a b' is not a valid request path", "answered 400"),
    ],
)
def test_access_path_must_be_normalised(path: str, message: str, hint: str) -> None:
    """E506 at the path: requests are matched on their normalised path, so it never matches."""
    rules = f"  - {{from: web, to: catalog, paths: [/ok, '{path}']}}\n"
    (diag,) = [d for d in diagnose(spec("required", rules)) if d.code == "E506"]
    assert diag.severity == "error" and diag.message.startswith(message)
    assert diag.hint is not None and hint in diag.hint


@pytest.mark.parametrize("path", ["/", "/charge", "/charge/", "/a/b%2Fc", "/~u", "/a:b@c"])
def test_normalised_access_paths_are_fine(path: str) -> None:
    rules = f"  - {{from: web, to: catalog, paths: ['{path}']}}\n"
    assert "E506" not in codes(spec("required", rules))


# --- the build agrees with the runtime ------------------------------------------------------

CALLERS = ("web", "api", "*")
SERVICES = ("pay", "pay-dr", "audit")


@settings(deadline=None, max_examples=60, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(CALLERS),
            st.sampled_from(SERVICES),
            st.sampled_from(("", "methods: [GET]", "methods: [POST]")),
            st.sampled_from(("", "paths: [/a]", "paths: [/b]", "paths: [/a/x]")),
        ),
        max_size=5,
    )
)
def test_w503_and_w504_match_the_runtime_decisions(
    rules: list[tuple[str, str, str, str]],
) -> None:
    """W503 iff the runtime's matrix denies a caller that some destination grants something;
    W504 iff the runtime allows nothing at all on the listener."""
    lines = "".join(
        f"  - {{from: '{c}', to: {s}" + "".join(f", {x}" for x in (m, p) if x) + "}\n"
        for c, s, m, p in rules
    )
    text = REACH + lines
    found = codes(text)
    tables = to_tables(mesh_of(text))
    runtime = AccessPolicy.from_tables(tables)
    rows = runtime.matrix()
    starved = [
        row
        for row in rows
        if not row.grants and any(runtime.grants_for(row.caller, s) for s in row.services)
    ]
    assert ("W503" in found) == bool(starved)
    assert ("W504" in found) == (not any(row.grants for row in rows))
    for row in rows:  # what the matrix says is what a request gets
        for method in ("GET", "POST"):
            for path in ("/a", "/a/x", "/b"):
                expect = any(g.permits(method, path) for g in row.grants)
                if row.caller != "*":
                    assert runtime.route_allowed(row.route, row.caller, method, path) == expect
