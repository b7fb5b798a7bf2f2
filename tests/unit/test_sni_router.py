"""SNI routing (policy/sni.py): exact names win, then the longest wildcard suffix.

The router's dict walk is checked against a plain reading of the rule (try the patterns in
:func:`precedence` order, take the first that matches), which is also the order the HAProxy
target writes its ``use_backend`` lines in.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.policy.sni import SniRouter, precedence
from meshgen.runtime.tables import SniRoute

ROUTES = (
    SniRoute("*.test", "any-test"),
    SniRoute("api.internal.test", "api"),
    SniRoute("*.internal.test", "internal"),
)


def test_exact_then_longest_wildcard() -> None:
    router = SniRouter(ROUTES)
    assert router.route("api.internal.test") == "api"
    assert router.route("API.Internal.Test") == "api"
    assert router.route("db.internal.test") == "internal"
    assert router.route("a.b.internal.test") == "internal"
    assert router.route("internal.test") == "any-test"  # *.test covers it, *.internal.test not
    assert router.route("test") is None
    assert router.route("example.com") is None
    assert router.route(".test") is None


def test_precedence_order() -> None:
    assert [r.pattern for r in precedence(ROUTES)] == [
        "api.internal.test",
        "*.internal.test",
        "*.test",
    ]


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == pattern


LABEL = st.sampled_from(["a", "b", "api", "x1", "test", "internal"])
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
PATTERN = st.tuples(st.booleans(), NAME).map(lambda p: ("*." if p[0] else "") + p[1])


@given(st.dictionaries(PATTERN, st.sampled_from(["s1", "s2", "s3"]), max_size=6), NAME)
def test_router_agrees_with_first_match_in_precedence_order(
    table: dict[str, str], name: str
) -> None:
    routes = [SniRoute(p, s) for p, s in table.items()]
    expected = next((r.service for r in precedence(routes) if _matches(r.pattern, name)), None)
    assert SniRouter(routes).route(name) == expected
