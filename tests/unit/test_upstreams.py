"""Unit tests for the Upstreams facade: subsets, failover, backup, outliers, in-flight, cache."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.policy.tls import upstream_tls
from meshgen.runtime.tables import (
    ClientTls,
    Cluster,
    Endpoint,
    Failover,
    HealthCheck,
    LoadBalancer,
    MeshInfo,
    OutlierDetection,
    StaticDiscovery,
    Subset,
    Tables,
)
from meshgen.runtime.upstream.upstreams import Picked, Upstreams


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingMetrics:
    """A real (tiny) metrics sink that remembers what it was told."""

    def __init__(self) -> None:
        self.healthy: dict[tuple[str, str], bool] = {}
        self.ejections: list[tuple[str, str]] = []

    def set_endpoint_healthy(self, service: str, endpoint: str, healthy: bool) -> None:
        self.healthy[(service, endpoint)] = healthy

    def inc_ejection(self, service: str, endpoint: str) -> None:
        self.ejections.append((service, endpoint))

    def forget_endpoint(self, service: str, endpoint: str) -> None:
        self.healthy.pop((service, endpoint), None)


def ep(port: int, zone: str | None = None, version: str = "v1", weight: int = 1) -> Endpoint:
    return Endpoint("127.0.0.1", port, weight=weight, zone=zone, labels=(("version", version),))


def make_tables(*clusters: Cluster, checked: bool = True, outlier: bool = False) -> Tables:
    check = HealthCheck(kind="tcp", healthy_threshold=1, unhealthy_threshold=1)
    od = OutlierDetection(
        consecutive_5xx=2, base_ejection_time_s=30, max_ejection_percent=50, interval_s=10
    )
    return Tables(
        mesh=MeshInfo("shop", "mesh.test"),
        clusters=clusters,
        routes=(),
        listeners=(),
        health_checks={c.name: check for c in clusters} if checked else {},
        outlier_detection={c.name: od for c in clusters} if outlier else {},
    )


REVIEWS = Cluster(
    "reviews",
    StaticDiscovery((ep(1, "a", "v1"), ep(2, "a", "v2"), ep(3, "b", "v1"), ep(4, "b", "v2"))),
    subsets=(Subset("v1", (("version", "v1"),)), Subset("v2", (("version", "v2"),)), Subset("all")),
    failover=Failover(zones=("a", "b"), panic_threshold=50, backup="reviews-dr"),
)
DR = Cluster(
    "reviews-dr", StaticDiscovery((ep(9, version="dr"),)), failover=Failover(backup="reviews")
)


def ports(u: Upstreams, service: str, subset: str | None, n: int = 40) -> Counter[int]:
    out: Counter[int] = Counter()
    for _ in range(n):
        p = u.pick(service, subset, None)
        assert p is not None
        out[p.endpoint.port] += 1
    return out


def up(rng_seed: int = 1, **kw: object) -> Upstreams:
    return Upstreams(make_tables(REVIEWS, DR, **kw), rng=random.Random(rng_seed))  # type: ignore[arg-type]


def test_pick_prefers_first_zone_and_subset_labels() -> None:
    """Zone a first; a subset narrows to its labels (then its own zone preference)."""
    u = up()
    assert set(ports(u, "reviews", None)) == {1, 2}
    assert set(ports(u, "reviews", "v1")) == {1}
    assert set(ports(u, "reviews", "all")) == {1, 2}


def test_unknown_service_or_subset_is_503() -> None:
    """Names the tables do not know pick nothing."""
    u = up()
    assert u.pick("nope", None, None) is None
    assert u.pick("reviews", "v9", None) is None


def test_zone_failover_follows_health() -> None:
    """Zone a below 50 % healthy -> zone b; a subset with no healthy endpoint -> 503."""
    u = up()
    u.on_probe_result("reviews", "127.0.0.1:1", False)
    assert set(ports(u, "reviews", None)) == {2}  # 1/2 healthy = 50 % still qualifies
    assert set(ports(u, "reviews", "v1")) == {3}  # v1 in zone a is 0 %
    u.on_probe_result("reviews", "127.0.0.1:3", False)
    assert u.pick("reviews", "v1", None) is None  # no fallback to v2, no backup
    u.on_probe_result("reviews", "127.0.0.1:1", True)
    assert set(ports(u, "reviews", "v1")) == {1}


def test_backup_only_when_the_whole_service_is_down_and_cycles_stop() -> None:
    """All reviews down -> reviews-dr (subset ignored); both down -> None despite the cycle."""
    u = up()
    for p in (1, 2, 3, 4):
        u.on_probe_result("reviews", f"127.0.0.1:{p}", False)
    picked = u.pick("reviews", "v2", None)
    assert picked == Picked("reviews-dr", ep(9, version="dr"))
    u.on_probe_result("reviews-dr", "127.0.0.1:9", False)
    assert u.pick("reviews", None, None) is None


def test_exclude_sends_a_retry_elsewhere_when_possible() -> None:
    """Excluded addresses are avoided unless nothing else is eligible."""
    u = up()
    for _ in range(20):
        p = u.pick("reviews", None, None, frozenset({"127.0.0.1:1"}))
        assert p is not None and p.endpoint.port == 2
    p = u.pick("reviews", "v1", None, frozenset({"127.0.0.1:1"}))
    assert p is not None and p.endpoint.port == 1


def test_outlier_ejection_and_return_with_injected_clock() -> None:
    """Two failures eject (max 50 %), review after base_ejection_time returns the endpoint."""
    clock = Clock()
    metrics = RecordingMetrics()
    cluster = Cluster("svc", StaticDiscovery((ep(1), ep(2), ep(3), ep(4))))
    u = Upstreams(
        make_tables(cluster, checked=False, outlier=True),
        clock=clock,
        metrics=metrics,
        rng=random.Random(2),
    )
    first = Picked("svc", ep(1))
    u.report(first, 502)
    u.report(first, "reset")
    assert "127.0.0.1:1" not in {
        u.pick("svc", None, None).endpoint.address  # type: ignore[union-attr]
        for _ in range(40)
    }
    assert metrics.ejections == [("svc", "127.0.0.1:1")]
    assert metrics.healthy[("svc", "127.0.0.1:1")] is False
    for p in (2, 3):  # third ejection would exceed 50 %
        u.report(Picked("svc", ep(p)), 500)
        u.report(Picked("svc", ep(p)), 500)
    assert u.snapshot()["svc"]["healthy"] == 2
    clock.now = 29.0
    assert u.review_outliers("svc") == []
    clock.now = 30.0
    assert u.review_outliers("svc") == ["127.0.0.1:1", "127.0.0.1:2"]
    assert metrics.healthy[("svc", "127.0.0.1:1")] is True
    assert len(ports(u, "svc", None, 80)) == 4


def test_in_flight_survives_endpoint_swaps_and_drives_least_request() -> None:
    """Counters are keyed by address: a swap keeps them; an ended request decrements."""
    cluster = Cluster(
        "svc",
        StaticDiscovery((ep(1), ep(2))),
        load_balancer=LoadBalancer(policy="least_request", choice_count=10),
    )
    u = Upstreams(make_tables(cluster, checked=False), rng=random.Random(3))
    busy = Picked("svc", ep(1))
    for _ in range(3):
        u.begin(busy)
    assert set(ports(u, "svc", None)) == {2}
    u.apply_endpoints("svc", (ep(1), ep(2, weight=1), ep(5)))
    assert u.snapshot()["svc"]["endpoints"][0]["in_flight"] == 3
    u.apply_endpoints("svc", (ep(2), ep(5)))  # endpoint 1 removed while busy
    for _ in range(3):
        u.end(busy)
    u.apply_endpoints("svc", (ep(1), ep(2)))
    assert u.snapshot()["svc"]["endpoints"][0]["in_flight"] == 0


def test_balancer_cached_per_eligible_set_not_rebuilt_per_pick() -> None:
    """Same eligible set -> same balancer object, also after a flap down and back up."""
    u = up()
    svc = u._services["reviews"]
    u.pick("reviews", None, None)
    before = svc.picks[None][1]
    u.pick("reviews", None, None)
    assert svc.picks[None][1] is before
    u.on_probe_result("reviews", "127.0.0.1:2", False)
    u.pick("reviews", None, None)
    assert svc.picks[None][1] is not before
    u.on_probe_result("reviews", "127.0.0.1:2", True)
    u.pick("reviews", None, None)
    assert svc.picks[None][1] is before


def test_removed_endpoint_results_are_ignored() -> None:
    """Probe results or reports for addresses no longer discovered change nothing."""
    u = up(outlier=True)
    u.apply_endpoints("reviews", (ep(1, "a"), ep(2, "a")))
    version = u._services["reviews"].version
    u.on_probe_result("reviews", "127.0.0.1:3", False)
    u.report(Picked("reviews", ep(3, "b")), 500)
    assert u._services["reviews"].version == version


def test_snapshot_is_json_able() -> None:
    """snapshot() holds only JSON types and shows discovery state."""
    import json

    snap = up().snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap["reviews"]["discovery"]["kind"] == "static"
    assert snap["reviews"]["total"] == 4 and snap["reviews"]["backup"] == "reviews-dr"


def test_discovery_removal_ends_the_endpoint_healthy_series() -> None:
    """An endpoint discovery drops loses its meshgen_endpoint_healthy sample; others stay."""
    metrics = Metrics()
    cluster = Cluster("svc", StaticDiscovery((ep(1), ep(2))))
    u = Upstreams(make_tables(cluster, checked=False), metrics=metrics, rng=random.Random(5))
    series = 'meshgen_endpoint_healthy{service="svc",endpoint="127.0.0.1:%d"} 1'
    assert {series % 1, series % 2} <= set(metrics.render().splitlines())
    u.apply_endpoints("svc", (ep(2), ep(3)))
    lines = set(metrics.render().splitlines())
    assert series % 1 not in lines and {series % 2, series % 3} <= lines


@pytest.mark.parametrize(("san", "healthy"), [("spiffe://shop/svc", 0), ("svc.mesh.test", 1)])
def test_probe_of_a_bare_context_checks_the_tables_identity(
    tmp_path: Path, san: str, healthy: int
) -> None:
    """Given only an SSLContext (as the client passes), probes still apply the service's
    subject_alt_names from the tables: a server with the wrong identity goes unhealthy."""
    ca = trustme.CA()
    leaf = ca.issue_cert("svc.mesh.test", "127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_ctx)
    cfg = ClientTls(mode="simple", ca="ca.pem", subject_alt_names=(san,))
    client = upstream_tls("svc", cfg, tmp_path)
    assert client is not None

    async def run() -> int:
        handshakes = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal handshakes
            handshakes += 1
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        cluster = Cluster("svc", StaticDiscovery((Endpoint("127.0.0.1", port),)))
        check = HealthCheck(kind="tcp", interval_s=0.05, unhealthy_threshold=1)
        tables = replace(
            make_tables(cluster), client_tls={"svc": cfg}, health_checks={"svc": check}
        )
        metrics = Metrics()
        u = Upstreams(tables, metrics=metrics, client_ssl={"svc": client.context})
        await u.start()
        try:
            async with asyncio.timeout(5):
                while handshakes < 2:  # the second probe starts after the first one's verdict
                    await asyncio.sleep(0.01)
        finally:
            await u.stop()
            server.close()
        return metrics.endpoint_healthy[("svc", f"127.0.0.1:{port}")]

    assert asyncio.run(run()) == healthy


def test_inherit_carries_health_and_ejections_of_endpoints_that_stay() -> None:
    """A reload's new Upstreams takes the old one's down states and ejections (with their
    remaining time) for addresses it still has; new addresses start healthy; metrics follow."""
    clock = Clock()
    svc = Cluster("s", StaticDiscovery((ep(1), ep(2), ep(3))))
    tables = make_tables(svc, outlier=True)
    old = Upstreams(tables, clock=clock, rng=random.Random(1))
    old.on_probe_result("s", "127.0.0.1:1", False)  # threshold 1: down
    picked = Picked("s", ep(2))
    old.report(picked, 503)
    old.report(picked, 503)  # consecutive_5xx 2: ejected until t=30
    old.report(Picked("s", ep(3)), 503)  # one failure counted towards an ejection
    assert not old.snapshot()["s"]["endpoints"][1]["healthy"]
    metrics = RecordingMetrics()
    moved = replace(svc, discovery=StaticDiscovery((ep(1), ep(2), ep(3), ep(4))))
    new = Upstreams(make_tables(moved, outlier=True), clock=clock, metrics=metrics)
    new.inherit(old)
    assert set(ports(new, "s", None)) == {3, 4}
    assert metrics.healthy[("s", "127.0.0.1:1")] is False
    assert metrics.healthy[("s", "127.0.0.1:2")] is False
    clock.now = 10.0
    new.report(Picked("s", ep(3)), 503)  # the carried count completes the streak: until t=40
    assert set(ports(new, "s", None)) == {4}
    new.on_probe_result("s", "127.0.0.1:1", True)  # healthy_threshold 1: back
    clock.now = 30.0
    assert new.review_outliers("s") == ["127.0.0.1:2"]
    assert set(ports(new, "s", None)) == {1, 2, 4}
