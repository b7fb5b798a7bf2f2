"""The runtime's own table diff: every kind of change is named in mesh.yaml's words, access by
verdict, and equal tables (or a reworded rule set) give no change at all."""

from __future__ import annotations

from dataclasses import fields, make_dataclass, replace

from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.app.table_changes import (
    OTHER_METHODS,
    Change,
    Flip,
    access_changes,
    describe,
    table_changes,
    verdict_flips,
)
from meshgen.runtime.app.table_view import field_name, leaves, service_view
from meshgen.runtime.policy.access import AccessPolicy, path_under
from meshgen.runtime.tables import (
    AccessRule,
    Alert,
    Endpoint,
    HealthCheck,
    Limits,
    RetryPolicy,
    ServerTls,
    Slo,
    SniRoute,
    StaticDiscovery,
    Tables,
    TcpTarget,
)
from tests.unit.tables_factory import make_tables

BASE = make_tables()


def lines(new: Tables, old: Tables = BASE) -> list[str]:
    return [c.text() for c in table_changes(old, new)]


def with_cluster(tables: Tables, name: str, **changes: object) -> Tables:
    clusters = tuple(replace(c, **changes) if c.name == name else c for c in tables.clusters)
    return replace(tables, clusters=clusters)


def with_route(tables: Tables, name: str, **changes: object) -> Tables:
    routes = tuple(replace(r, **changes) if r.name == name else r for r in tables.routes)
    return replace(tables, routes=routes)


def test_equal_tables_have_no_changes() -> None:
    assert table_changes(BASE, make_tables()) == []


def test_route_weights() -> None:
    split = BASE.routes[0]
    to = (replace(split.to[0], weight=50), replace(split.to[1], weight=50))
    assert lines(with_route(BASE, "reviews-split", to=to)) == [
        "route reviews-split: to reviews/v1 weight 90 -> 50",
        "route reviews-split: to reviews/v2 weight 10 -> 50",
    ]


def test_route_match_and_destination_added() -> None:
    split = BASE.routes[0]
    match = replace(split.match, path_kind="exact", path="/api/x", methods=("GET", "HEAD"))
    third = replace(split.to[1], subset=None, weight=0)
    changed = with_route(BASE, "reviews-split", match=match, to=(*split.to, third))
    assert lines(changed) == [
        "route reviews-split: match.path_prefix removed (was /api/)",
        "route reviews-split: match.path_exact added (/api/x)",
        "route reviews-split: match.methods [GET] -> [GET, HEAD]",
        "route reviews-split: to reviews added (weight 0, retries none)",
    ]


def test_route_policy_shows_overrides_only() -> None:
    """A destination lists the per-request policy that differs from its service's own."""
    split = BASE.routes[0]
    slow = replace(split.to[0], timeout_s=2.0)
    assert lines(with_route(BASE, "reviews-split", to=(slow, split.to[1]))) == [
        "route reviews-split: to reviews/v1 timeout added (2s)"
    ]
    # The service's timeout changing to the route's: the override is gone, the service changed.
    same = with_cluster(with_route(BASE, "reviews-split", to=(slow, split.to[1])), "reviews")
    assert lines(with_cluster(same, "reviews", timeout_s=2.0), same) == [
        "route reviews-split: to reviews/v1 timeout removed (was 2s)",
        "route reviews-split: to reviews/v2 timeout added (15s)",
        "service reviews: timeout 15s -> 2s",
    ]


def test_route_mirror_fault_headers_redirect() -> None:
    split = BASE.routes[0]
    changed = with_route(
        BASE,
        "reviews-split",
        mirror=replace(split.mirror, percent=50.0),
        fault=None,
        request_headers=replace(split.request_headers, remove=()),
    )
    changed = with_route(changed, "moved", redirect=replace(BASE.routes[1].redirect, status=301))
    assert lines(changed) == [
        "route reviews-split: fault removed (was delay.fixed 250ms, delay.percent 10%)",
        "route reviews-split: mirror.percent 5% -> 50%",
        "route reviews-split: headers.request.remove removed (was [x-debug])",
        "route moved: redirect.status 308 -> 301",
    ]


def test_routes_added_removed_and_reordered() -> None:
    split, moved = BASE.routes
    extra = replace(moved, name="extra")
    changed = replace(BASE, routes=(extra, moved, split))
    assert lines(changed) == [
        "routes: order reviews-split, moved -> moved, reviews-split",
        "route extra: added (tried before moved)",
    ]
    assert lines(replace(BASE, routes=(split,))) == ["route moved: removed"]


def test_endpoints_added_removed_and_changed() -> None:
    reviews = BASE.clusters[0]
    assert isinstance(reviews.discovery, StaticDiscovery)
    first, _ = reviews.discovery.endpoints
    endpoints = (replace(first, weight=5, zone=None), Endpoint("10.0.0.7", 80, zone="c"))
    changed = with_cluster(BASE, "reviews", discovery=StaticDiscovery(endpoints))
    assert lines(changed) == [
        "service reviews: endpoint 127.0.0.1:9081 weight 1 -> 5",
        "service reviews: endpoint 127.0.0.1:9081 zone removed (was a)",
        "service reviews: endpoint [::1]:9082 removed",
        "service reviews: endpoint 10.0.0.7:80 added (weight 1, zone c)",
    ]


def test_service_policies() -> None:
    reviews = BASE.clusters[0]
    assert reviews.retries is not None
    changed = with_cluster(
        BASE,
        "reviews",
        retries=replace(reviews.retries, attempts=3, backoff_base_s=0.1),
        rate_limit=None,
        failover=replace(reviews.failover, backup=None),
        load_balancer=replace(reviews.load_balancer, policy="maglev"),
    )
    changed = replace(
        changed,
        health_checks={**BASE.health_checks, "reviews": HealthCheck("tcp")},
        outlier_detection={},
    )
    service_lines = [line for line in lines(changed) if line.startswith("service")]
    assert service_lines == [
        "service reviews: load_balancer.policy ring_hash -> maglev",
        "service reviews: health_check.http removed (was path /healthz, "
        "expected_statuses [200, 204])",
        "service reviews: health_check.tcp added",
        "service reviews: health_check.interval 1s -> 5s",
        "service reviews: health_check.timeout 500ms -> 1s",
        "service reviews: health_check.healthy_threshold 1 -> 2",
        "service reviews: health_check.unhealthy_threshold 2 -> 3",
        "service reviews: outlier_detection removed (was consecutive_5xx 3, interval 10s, "
        "base_ejection_time 30s, max_ejection_percent 10%)",
        "service reviews: retries.attempts 2 -> 3",
        "service reviews: retries.backoff.base 25ms -> 100ms",
        "service reviews: rate_limit removed (was requests_per_second 100, burst 200)",
        "service reviews: failover.backup removed (was ratings)",
    ]


def test_a_service_change_shows_on_routes_only_where_they_now_differ() -> None:
    """Destinations whose policy no longer equals the service's say so; the rest stay quiet."""
    changed = with_cluster(BASE, "reviews", connect_timeout_s=1.0, idle_timeout_s=120.0)
    assert lines(changed) == [
        "route reviews-split: to reviews/v1 idle_timeout added (1m)",
        "route reviews-split: to reviews/v2 idle_timeout added (1m)",
        "service reviews: connect_timeout 5s -> 1s",
        "service reviews: idle_timeout 1m -> 2m",
    ]


def test_tls_and_dns_discovery() -> None:
    tls = replace(BASE.client_tls["reviews"], mode="simple", cert=None, key=None)
    changed = replace(BASE, client_tls={"reviews": tls})
    ratings = BASE.clusters[1]
    changed = with_cluster(changed, "ratings", discovery=replace(ratings.discovery, refresh_s=60.0))
    assert lines(changed) == [
        "service reviews: tls.mode mutual -> simple",
        "service reviews: tls.cert removed (was certs/c.pem)",
        "service reviews: tls.key removed (was certs/c-key.pem)",
        "service ratings: discovery.dns.refresh 5s -> 1m",
    ]


def test_services_added_and_removed() -> None:
    reviews, ratings = BASE.clusters
    extra = replace(ratings, name="extra")
    assert lines(replace(BASE, clusters=(reviews, ratings, extra))) == ["service extra: added"]
    assert lines(replace(BASE, clusters=(reviews,))) == ["service ratings: removed"]


def test_listeners() -> None:
    edge, mtls = BASE.listeners
    assert mtls.tls is not None
    changed = replace(
        BASE,
        listeners=(
            replace(edge, port=8080, limits=Limits(max_connections=10)),
            replace(mtls, tls=replace(mtls.tls, client_certificates="optional")),
        ),
    )
    assert lines(changed) == [
        "listener edge: address 127.0.0.1:0 -> 127.0.0.1:8080",
        "listener edge: limits.max_connections 10000 -> 10",
        "listener mtls: tls.client_certificates required -> optional",
    ]
    plain = replace(BASE, listeners=(edge, replace(mtls, tls=None, routes=("moved",))))
    assert lines(plain) == [
        "listener mtls: routes [reviews-split] -> [moved]",
        "listener mtls: tls removed (was cert certs/edge.pem, key certs/edge-key.pem, "
        "ca certs/ca.pem, client_certificates required, min_version 1.2)",
    ]
    tls = ServerTls("a.pem", "a-key.pem")
    added = replace(BASE, listeners=(edge, mtls, replace(edge, name="new", tls=tls)))
    assert lines(added) == ["listener new: added"]


def test_tcp_listeners_and_services() -> None:
    """Targets, SNI patterns, a service's protocol and a grpc probe are named as written."""
    edge, mtls = BASE.listeners
    tcp = replace(edge, name="db", routes=(), protocol="tcp", to=(TcpTarget("a", None, 100),))
    before = replace(BASE, listeners=(edge, mtls, tcp))
    split = replace(tcp, to=(TcpTarget("a", None, 90), TcpTarget("a", "v1", 10)))
    assert lines(replace(BASE, listeners=(edge, mtls, split)), before) == [
        "listener db: to a 100 -> 90",
        "listener db: to a/v1 added (10)",
    ]
    sni = replace(tcp, to=(), sni=(SniRoute("*.test", "a"),))
    assert lines(replace(BASE, listeners=(edge, mtls, sni)), before) == [
        "listener db: to a removed",
        "listener db: sni *.test added (a)",
    ]
    name = BASE.clusters[0].name
    assert lines(with_cluster(BASE, name, protocol="tcp")) == [
        f"service {name}: protocol http1 -> tcp"
    ]
    grpc = HealthCheck("grpc", grpc_service="a.v1.A", port=9090)
    checks = replace(BASE, health_checks={**BASE.health_checks, name: grpc})
    changed = lines(checks)
    assert f"service {name}: health_check.grpc added (service a.v1.A)" in changed
    assert f"service {name}: health_check.port added (9090)" in changed


def test_alerts_and_slos() -> None:
    alert = BASE.alerts[0]
    slo = BASE.slos[0]
    changed = replace(
        BASE,
        alerts=(
            replace(alert, threshold=0.02, severity="ticket"),
            Alert("slow", "reviews", "p99_latency", ">", 0.5, 60.0, "info"),
        ),
        slos=(replace(slo, objective=99.5, window_s=7 * 86400.0),),
    )
    assert lines(changed) == [
        "alert reviews-errors: threshold 5% -> 2%",
        "alert reviews-errors: severity page -> ticket",
        "alert slow: added",
        "slo reviews-availability: objective 99.9% -> 99.5%",
        "slo reviews-availability: window 30d -> 7d",
    ]
    assert lines(replace(BASE, alerts=(), slos=())) == [
        "alert reviews-errors: removed",
        "slo reviews-availability: removed",
    ]
    assert isinstance(changed.slos[0], Slo)


def test_mesh_fields() -> None:
    changed = replace(BASE, mesh=replace(BASE.mesh, alertmanager=None, admin_port=15000))
    assert lines(changed) == [
        "mesh: admin 127.0.0.1:0 -> 127.0.0.1:15000",
        "mesh: alertmanager removed (was http://127.0.0.1:9093)",
    ]


def access(*rules: AccessRule) -> tuple[AccessRule, ...]:
    return rules


def test_access_verdicts_named_by_caller_service_method_and_path() -> None:
    old = access(AccessRule("frontend", "payments", ("POST",), ("/charge",)))
    assert [c.text() for c in access_changes(old, ())] == [
        "access: frontend -> payments POST /charge now denied"
    ]
    assert [c.text() for c in access_changes((), old)] == [
        "access: frontend -> payments POST /charge now allowed"
    ]


def test_access_regions_other_methods_and_paths() -> None:
    old = access(AccessRule("frontend", "payments"))
    new = access(AccessRule("frontend", "payments", ("GET",), ("/charge",)))
    assert [c.text() for c in access_changes(old, new)] == [
        "access: frontend -> payments any method paths outside /charge now denied",
        "access: frontend -> payments methods other than GET /charge now denied",
    ]
    nested = access(AccessRule("*", "payments", (), ("/api", "/api/admin")))
    narrower = access(AccessRule("*", "payments", (), ("/api/admin",)))
    assert [c.text() for c in access_changes(nested, narrower)] == [
        "access: * -> payments any method /api (except /api/admin) now denied"
    ]


def test_rewording_rules_is_no_change() -> None:
    old = access(AccessRule("a", "s", ("GET", "POST"), ("/x",)))
    new = access(AccessRule("a", "s", ("POST",), ("/x",)), AccessRule("a", "s", ("get",), ("/x",)))
    assert access_changes(old, new) == []
    assert table_changes(replace(BASE, access=old), replace(BASE, access=new)) == []


_METHODS = st.sampled_from(["GET", "POST", "DELETE"])
_PATHS = st.sampled_from(["/", "/a", "/a/b", "/ab", "/c/"])
_REQUEST_PATHS = st.sampled_from(["/", "/a", "/a/b", "/a/b/c", "/ab", "/c", "/c/", "/c/d", "/z"])
_RULES = st.lists(
    st.builds(
        AccessRule,
        st.sampled_from(["x", "y", "*"]),
        st.sampled_from(["s", "t"]),
        st.lists(_METHODS, max_size=2).map(tuple),
        st.lists(_PATHS, max_size=2).map(tuple),
    ),
    max_size=4,
)


@given(_RULES, _RULES, st.sampled_from(["x", "y", "z"]), st.sampled_from(["s", "t"]),
       st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
       _REQUEST_PATHS)  # fmt: skip
def test_every_verdict_flip_falls_in_exactly_one_reported_region(
    old: list[AccessRule], new: list[AccessRule], caller: str, service: str, method: str, path: str
) -> None:
    """A request whose verdict differs between the rule sets lies in exactly one reported
    region with the new verdict (and one that did not change lies in none): its caller (or
    ``*`` for a caller no rule of that service names), the longest named prefix above its path,
    its method (or "other methods")."""
    was = AccessPolicy(old).allowed(caller, method, path, (service,))
    now = AccessPolicy(new).allowed(caller, method, path, (service,))
    named = {r.source for r in (*old, *new) if r.service == service} - {"*"}

    def covers(flip: Flip) -> bool:
        longest = max((p for p in flip.prefixes if path_under(path, p)), key=len)
        probe = method if method in flip.named_methods else OTHER_METHODS
        return (
            flip.caller == (caller if caller in named else "*")
            and flip.service == service
            and flip.prefix == longest
            and probe in flip.methods
        )

    hits = [f for f in verdict_flips(old, new) if covers(f)]
    if was == now:
        assert hits == []
    else:
        assert [f.verdict for f in hits] == ["allowed" if now else "denied"]


def test_describe_caps_the_log() -> None:
    changes = [Change("service", f"s{i}", "", None, "") for i in range(5)]
    assert describe(changes, limit=2) == [
        "service s0: added",
        "service s1: added",
        "... and 3 more",
    ]


def test_service_view_leaves_are_mesh_yaml_fields() -> None:
    names = {name for name, _ in leaves(service_view(BASE, BASE.clusters[0]))}
    assert {"retries.backoff.base", "load_balancer.hash_on.header", "tls.subject_alt_names",
            "failover.panic_threshold", "health_check.http.path"} <= names  # fmt: skip
    assert field_name(("to a/v1", "retries", "attempts")) == "to a/v1 retries.attempts"
    assert isinstance(BASE.clusters[0].retries, RetryPolicy)


def _with_new_field(obj: object, name: str, value: str) -> object:
    """``obj`` as an instance of a subclass with one more field, as a later table version."""
    cls = make_dataclass(f"Later{type(obj).__name__}", [(name, str, "")], bases=(type(obj),),
                         frozen=True)  # fmt: skip
    values = {f.name: getattr(obj, f.name) for f in fields(obj) if f.init}  # type: ignore[arg-type]
    return cls(**values, **{name: value})


def test_a_field_a_later_version_adds_is_reported() -> None:
    """The views are generic: a new field on a service, route or listener needs no code here."""
    cluster, route, listener = BASE.clusters[0], BASE.routes[0], BASE.listeners[0]
    old = replace(
        BASE,
        clusters=(_with_new_field(cluster, "tier", "gold"), *BASE.clusters[1:]),
        routes=(_with_new_field(route, "priority", "low"), *BASE.routes[1:]),
        listeners=(_with_new_field(listener, "access_mode", "enforce"), *BASE.listeners[1:]),
    )
    new = replace(
        BASE,
        clusters=(_with_new_field(cluster, "tier", "silver"), *BASE.clusters[1:]),
        routes=(_with_new_field(route, "priority", "high"), *BASE.routes[1:]),
        listeners=(_with_new_field(listener, "access_mode", "audit"), *BASE.listeners[1:]),
    )
    assert lines(new, old) == [
        "listener edge: access_mode enforce -> audit",
        "route reviews-split: priority low -> high",
        "service reviews: tier gold -> silver",
    ]
