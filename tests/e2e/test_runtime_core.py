"""End-to-end: Upstreams against real dnsmasq (SRV and A discovery) and real HTTP backends.

Each test runs the Upstreams asyncio shell for real (DNS refresh loops, health probes) and polls
its state with deadlines of ~3x the expected time; nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dns_server import Dnsmasq, Srv
from polling import eventually_async
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from meshgen.runtime.tables import (
    Cluster,
    DnsDiscovery,
    Endpoint,
    Failover,
    HealthCheck,
    MeshInfo,
    StaticDiscovery,
    Tables,
)
from meshgen.runtime.upstream.upstreams import Upstreams

pytestmark = pytest.mark.e2e

SRV_NAME = "_http._tcp.pay.mesh.test"


def tables(*clusters: Cluster, checks: dict[str, HealthCheck] | None = None) -> Tables:
    return Tables(
        mesh=MeshInfo("shop", "mesh.test"),
        clusters=clusters,
        routes=(),
        listeners=(),
        health_checks=checks or {},
    )


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    """A Dnsmasq on a free port (not yet started), stopped at teardown."""
    server = Dnsmasq(tmp_path / "dns")
    yield server
    server.stop()


def addresses(up: Upstreams, service: str) -> dict[str, int]:
    return {e["address"]: e["weight"] for e in up.snapshot()[service]["endpoints"]}


def test_srv_discovery_follows_record_changes_and_keeps_last_good(dnsmasq: Dnsmasq) -> None:
    """SRV added/changed/removed while running is picked up; server down keeps the last set."""
    dnsmasq.set_hosts(
        {
            "b1.pay.mesh.test": ["127.0.0.1"],
            "b2.pay.mesh.test": ["127.0.0.2"],
            "b3.pay.mesh.test": ["127.0.0.3"],
            "standby.pay.mesh.test": ["127.0.0.9"],
        }
    )
    dnsmasq.start(
        [
            Srv(SRV_NAME, "b1.pay.mesh.test", 8001, 10, 5),
            Srv(SRV_NAME, "b2.pay.mesh.test", 8002, 10, 1),
            Srv(SRV_NAME, "standby.pay.mesh.test", 8009, 20, 100),
        ]
    )
    cluster = Cluster("pay", DnsDiscovery(SRV_NAME, "SRV", refresh_s=30.0))

    async def run() -> None:
        up = Upstreams(
            tables(cluster),
            dns_nameservers=["127.0.0.1"],
            dns_port=dnsmasq.port,
            rng=random.Random(1),
        )
        await up.start()
        try:
            assert addresses(up, "pay") == {"127.0.0.1:8001": 5, "127.0.0.2:8002": 1}
            assert up.snapshot()["pay"]["discovery"]["last_ttl"] == dnsmasq.ttl
            picked = up.pick("pay", None, None)
            assert picked is not None and picked.endpoint.port in (8001, 8002)
            dnsmasq.restart(
                [
                    Srv(SRV_NAME, "b1.pay.mesh.test", 8001, 10, 5),
                    Srv(SRV_NAME, "b3.pay.mesh.test", 8003, 10, 7),
                ]
            )
            want = {"127.0.0.1:8001": 5, "127.0.0.3:8003": 7}
            await eventually_async(
                lambda: addresses(up, "pay") == want, timeout=6.0, what="SRV change"
            )
            assert {up.pick("pay", None, None).endpoint.port for _ in range(24)} == {8001, 8003}  # type: ignore[union-attr]
            dnsmasq.stop()
            failures = up.snapshot()["pay"]["discovery"]["failures"]
            await eventually_async(
                lambda: up.snapshot()["pay"]["discovery"]["failures"] > failures,
                timeout=9.0,
                what="a counted DNS failure",
            )
            snap = up.snapshot()["pay"]
            assert addresses(up, "pay") == want and snap["discovery"]["last_error"]
            assert up.pick("pay", None, None) is not None
        finally:
            await up.stop()

    asyncio.run(run())


def test_a_records_via_hostsdir_and_nxdomain_keeps_last_good(dnsmasq: Dnsmasq) -> None:
    """A records swap live; in-flight counts survive the swap; NXDOMAIN keeps the last set."""
    dnsmasq.set_hosts({"api.mesh.test": ["127.0.0.11"]})
    dnsmasq.start([])
    cluster = Cluster("api", DnsDiscovery("api.mesh.test", "A", port=9000, refresh_s=30.0))

    async def run() -> None:
        up = Upstreams(tables(cluster), dns_nameservers=["127.0.0.1"], dns_port=dnsmasq.port)
        await up.start()
        try:
            assert addresses(up, "api") == {"127.0.0.11:9000": 1}
            busy = up.pick("api", None, None)
            assert busy is not None
            up.begin(busy)
            dnsmasq.set_hosts({"api.mesh.test": ["127.0.0.12", "127.0.0.13"]})
            want = {"127.0.0.12:9000": 1, "127.0.0.13:9000": 1}
            await eventually_async(
                lambda: addresses(up, "api") == want, timeout=4.0, what="A change"
            )
            up.end(busy)  # the request that started before the swap ends cleanly
            dnsmasq.set_hosts({"other.mesh.test": ["127.0.0.14"]})
            await eventually_async(
                lambda: up.snapshot()["api"]["discovery"]["failures"] > 0,
                timeout=4.0,
                what="NXDOMAIN counted",
            )
            assert addresses(up, "api") == want
        finally:
            await up.stop()

    asyncio.run(run())


def test_empty_first_answer_is_an_error_state_not_a_crash(dnsmasq: Dnsmasq) -> None:
    """A name with no records at start: no endpoints, status says why, pick answers None."""
    dnsmasq.set_hosts({})
    dnsmasq.start([])
    cluster = Cluster("ghost", DnsDiscovery("_http._tcp.ghost.mesh.test", "SRV"))

    async def run() -> dict[str, Any]:
        up = Upstreams(tables(cluster), dns_nameservers=["127.0.0.1"], dns_port=dnsmasq.port)
        await up.start()
        try:
            assert up.pick("ghost", None, None) is None
            return up.snapshot()["ghost"]
        finally:
            await up.stop()

    snap = asyncio.run(run())
    assert snap["total"] == 0 and not snap["discovery"]["ok"]
    assert snap["discovery"]["failures"] == 1 and snap["discovery"]["last_error"]


@pytest.fixture
def second_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def test_active_health_takes_a_backend_out_and_back(
    httpserver: HTTPServer, second_server: HTTPServer
) -> None:
    """A backend answering 503 on /healthz leaves rotation and returns once it answers 200."""
    status = {"code": 200}

    def healthz(_request: Request) -> Response:
        return Response("x", status=status["code"])

    httpserver.expect_request("/healthz").respond_with_handler(healthz)
    second_server.expect_request("/healthz").respond_with_data("ok")
    first = Endpoint("127.0.0.1", httpserver.port)
    second = Endpoint("127.0.0.1", second_server.port)
    check = HealthCheck(
        kind="http",
        path="/healthz",
        interval_s=0.1,
        timeout_s=0.5,
        healthy_threshold=2,
        unhealthy_threshold=2,
    )
    cluster = Cluster("web", StaticDiscovery((first, second)))

    def ports(up: Upstreams) -> set[int]:
        return {up.pick("web", None, None).endpoint.port for _ in range(10)}  # type: ignore[union-attr]

    async def run() -> None:
        up = Upstreams(tables(cluster, checks={"web": check}), rng=random.Random(4))
        await up.start()
        try:
            assert ports(up) == {first.port, second.port}  # start healthy
            status["code"] = 503
            await eventually_async(
                lambda: ports(up) == {second.port}, timeout=3.0, what="backend marked down"
            )
            status["code"] = 200
            await eventually_async(
                lambda: len(ports(up)) == 2, timeout=3.0, what="backend marked up"
            )
        finally:
            await up.stop()

    asyncio.run(run())


def test_backup_service_when_every_endpoint_is_down(httpserver: HTTPServer) -> None:
    """A TCP check against a closed port takes the only endpoint down: the backup answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = int(s.getsockname()[1])
    check = HealthCheck(kind="tcp", interval_s=0.1, timeout_s=0.5, unhealthy_threshold=1)
    primary = Cluster(
        "primary",
        StaticDiscovery((Endpoint("127.0.0.1", dead_port),)),
        failover=Failover(backup="dr"),
    )
    dr = Cluster("dr", StaticDiscovery((Endpoint("127.0.0.1", httpserver.port),)))

    async def run() -> None:
        up = Upstreams(tables(primary, dr, checks={"primary": check, "dr": check}))
        await up.start()
        try:
            await eventually_async(
                lambda: (p := up.pick("primary", None, None)) is not None and p.service == "dr",
                timeout=3.0,
                what="failover to the backup",
            )
            snap = up.snapshot()
            assert snap["primary"]["healthy"] == 0 and snap["dr"]["healthy"] == 1
        finally:
            await up.stop()

    asyncio.run(run())
