"""runtime/policy/access.py: deny-by-default decisions, every-destination rule, the allow matrix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.codec.paths import normalize_path
from meshgen.runtime.policy.access import (
    ANY,
    AccessPolicy,
    Grant,
    MatrixRow,
    PartialAccess,
    enforced_on,
    path_under,
    route_services,
)
from meshgen.runtime.tables import (
    AccessRule,
    Cluster,
    Endpoint,
    Failover,
    Listener,
    Match,
    Mirror,
    Redirect,
    Route,
    ServerTls,
    StaticDiscovery,
    Target,
)


def cluster(name: str, backup: str | None = None) -> Cluster:
    return Cluster(
        name, StaticDiscovery((Endpoint("127.0.0.1", 9000),)), failover=Failover(backup=backup)
    )


def route(name: str, *services: str, mirror: str | None = None) -> Route:
    to = tuple(Target(s, None, 100 // len(services), 15.0, 60.0, None) for s in services)
    return Route(
        name, Match(), to=to, mirror=Mirror(mirror, None, 10.0) if mirror is not None else None
    )


CLUSTERS = (
    cluster("payments"),
    cluster("catalog"),
    cluster("reviews", backup="reviews-dr"),
    cluster("reviews-dr"),
    cluster("audit"),
)
ROUTES = (
    route("pay", "payments"),
    route("shop", "catalog"),
    route("split", "catalog", "payments"),
    route("reviews", "reviews"),
    route("mirrored", "catalog", mirror="audit"),
    Route("old", Match(), redirect=Redirect("https://new.example/")),
)
RULES = (
    AccessRule("frontend", "payments", ("POST",), ("/charge",)),
    AccessRule("admin", "payments"),
    AccessRule(ANY, "catalog", ("GET",)),
    AccessRule("frontend", "reviews"),
    AccessRule("frontend", "reviews-dr", ("GET",)),
)


@pytest.fixture
def policy() -> AccessPolicy:
    return AccessPolicy(RULES, ROUTES, CLUSTERS)


def test_enforced_only_with_client_certificates() -> None:
    """Rules apply on listeners asking for client certificates (optional or required)."""
    plain = Listener("edge", "127.0.0.1", 0, ())
    assert not enforced_on(plain)
    for mode, enforced in (("none", False), ("optional", True), ("required", True)):
        lst = Listener("edge", "127.0.0.1", 0, (), ServerTls("c", "k", "ca", mode))  # type: ignore[arg-type]
        assert enforced_on(lst) is enforced


@pytest.mark.parametrize(
    ("path", "prefix", "under"),
    [
        ("/charge", "/charge", True),
        ("/charge/1", "/charge", True),
        ("/chargeback", "/charge", False),
        ("/charge", "/charge/", False),
        ("/charge/1", "/charge/", True),
        ("/anything", "/", True),
        ("/", "/", True),
    ],
)
def test_prefixes_stop_at_segment_boundaries(path: str, prefix: str, under: bool) -> None:
    assert path_under(path, prefix) is under


def test_route_services_follow_mirror_and_backup_chains() -> None:
    clusters = {c.name: c for c in (*CLUSTERS, cluster("reviews-dr", backup="reviews"))}
    assert route_services(ROUTES[2], clusters) == ("catalog", "payments")
    assert route_services(ROUTES[3], clusters) == ("reviews", "reviews-dr")  # cycle stops
    assert route_services(ROUTES[4], clusters) == ("catalog", "audit")
    assert route_services(ROUTES[5], clusters) == ()


def test_deny_by_default(policy: AccessPolicy) -> None:
    """No identity, an unknown caller, or an unlisted service: denied."""
    assert not policy.allowed(None, "GET", "/", ("catalog",))
    assert not policy.allowed("stranger", "GET", "/", ("payments",))
    assert not policy.allowed("frontend", "GET", "/", ("audit",))
    assert not policy.allowed("frontend", "GET", "/", ())
    assert not policy.route_allowed("pay", None, "POST", "/charge")
    assert not policy.route_allowed("nope", "admin", "GET", "/")
    assert not policy.route_allowed("old", "admin", "GET", "/")  # redirect: no destination


def test_methods_and_paths(policy: AccessPolicy) -> None:
    assert policy.route_allowed("pay", "frontend", "POST", "/charge")
    assert policy.route_allowed("pay", "frontend", "POST", "/charge/42")
    assert not policy.route_allowed("pay", "frontend", "GET", "/charge")
    assert not policy.route_allowed("pay", "frontend", "post", "/charge")  # methods are exact
    assert not policy.route_allowed("pay", "frontend", "POST", "/chargeback")
    assert not policy.route_allowed("pay", "frontend", "POST", "/admin")
    assert policy.route_allowed("pay", "admin", "DELETE", "/admin")


def test_dot_segments_cannot_escape_a_prefix(policy: AccessPolicy) -> None:
    """The caller passes the normalised path: /charge/../admin is checked as /admin."""
    for raw in ("/charge/../admin", "/charge/%2E%2E/admin", "//charge/./../admin?x=/charge"):
        path = normalize_path(raw)
        assert path == "/admin"
        assert not policy.route_allowed("pay", "frontend", "POST", path)


def test_star_means_any_identified_caller(policy: AccessPolicy) -> None:
    assert policy.route_allowed("shop", "stranger", "GET", "/items")
    assert policy.route_allowed("shop", "frontend", "GET", "/items")  # named callers too
    assert not policy.route_allowed("shop", "stranger", "POST", "/items")
    assert not policy.route_allowed("shop", None, "GET", "/items")


def test_split_needs_every_destination(policy: AccessPolicy) -> None:
    """A split is allowed only where every branch is, so it never gives random 403s."""
    assert policy.route_allowed("split", "frontend", "POST", "/charge") is False  # catalog: GET
    assert policy.route_allowed("split", "admin", "GET", "/x")  # payments: all, catalog: GET
    assert not policy.route_allowed("split", "admin", "POST", "/x")
    assert not policy.route_allowed("split", "stranger", "GET", "/x")  # payments denied


def test_denial_names_one_service(policy: AccessPolicy) -> None:
    """A denial is counted once, under the first destination that refuses it."""
    assert policy.denial("split", "frontend", "POST", "/charge") == "catalog"
    assert policy.denial("split", "frontend", "GET", "/charge") == "payments"
    assert policy.denial("split", "admin", "GET", "/") is None
    assert policy.denial("split", None, "GET", "/") == "catalog"
    assert policy.denial("old", "admin", "GET", "/") == ""
    assert policy.denial("nope", "admin", "GET", "/") == ""


def test_mirror_and_backup_count_as_destinations(policy: AccessPolicy) -> None:
    assert not policy.route_allowed("mirrored", "frontend", "GET", "/")  # audit denied
    assert policy.route_allowed("reviews", "frontend", "GET", "/")
    assert not policy.route_allowed("reviews", "frontend", "PUT", "/")  # reviews-dr: GET only


def test_matrix(policy: AccessPolicy) -> None:
    """The allow matrix is the intersection over destinations of each caller's grants."""
    rows = {(r.route, r.caller): r for r in policy.matrix()}
    assert policy.callers == ("admin", "frontend")
    assert set(rows) == {(r, c) for r in policy.routes for c in ("admin", "frontend", ANY)}
    assert "old" not in policy.routes
    assert rows["pay", "frontend"] == MatrixRow(
        "pay", "frontend", ("payments",), (Grant(frozenset({"POST"}), "/charge"),)
    )
    assert rows["split", "admin"].grants == (Grant(frozenset({"GET"}), "/"),)
    assert rows["split", "frontend"].grants == ()
    assert rows["reviews", "frontend"].grants == (Grant(frozenset({"GET"}), "/"),)
    assert rows["shop", ANY].grants == (Grant(frozenset({"GET"}), "/"),)
    assert rows["pay", ANY].grants == ()


def test_partial_access_is_reported(policy: AccessPolicy) -> None:
    """Callers granted some but not all destinations of a route (the compiler warns)."""
    assert set(policy.partial()) == {
        PartialAccess("split", ANY, ("catalog",), ("payments",)),
        PartialAccess("mirrored", "admin", ("catalog",), ("audit",)),
        PartialAccess("mirrored", "frontend", ("catalog",), ("audit",)),
        PartialAccess("mirrored", ANY, ("catalog",), ("audit",)),
    }


def test_grant_meet_and_within() -> None:
    get_a = Grant(frozenset({"GET"}), "/a")
    any_ab = Grant(frozenset(), "/a/b")
    assert get_a.meet(any_ab) == Grant(frozenset({"GET"}), "/a/b")
    assert get_a.meet(Grant(frozenset({"POST"}), "/a")) is None
    assert get_a.meet(Grant(frozenset(), "/ab")) is None
    assert Grant(frozenset({"GET"}), "/a/b").within(get_a)
    assert not any_ab.within(get_a)


CALLERS = st.sampled_from([None, "frontend", "admin", "stranger"])
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE"])
PATHS = st.sampled_from(["/", "/charge", "/charge/1", "/chargeback", "/admin", "/a/b"])


@given(CALLERS, METHODS, PATHS, st.sampled_from([r.name for r in ROUTES]))
def test_precomputed_matches_direct(
    caller: str | None, method: str, path: str, route_name: str
) -> None:
    """route_allowed (precomputed) equals allowed() over the route's services and the matrix."""
    policy = AccessPolicy(RULES, ROUTES, CLUSTERS)
    fast = policy.route_allowed(route_name, caller, method, path)
    services = policy.routes.get(route_name, ())
    assert fast == policy.allowed(caller, method, path, services)
    if caller is not None and route_name in policy.routes:
        row_caller = caller if caller in policy.callers else ANY
        row = next(r for r in policy.matrix() if (r.route, r.caller) == (route_name, row_caller))
        assert fast == any(g.permits(method, path) for g in row.grants)
