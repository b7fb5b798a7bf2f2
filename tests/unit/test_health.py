"""Unit tests for the runtime's health: state machine, outlier detection, failover, probes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
import trustme
from pytest_httpserver import HTTPServer

from meshgen.runtime.policy.tls import UpstreamTls, upstream_tls
from meshgen.runtime.tables import ClientTls, Endpoint, HealthCheck, OutlierDetection
from meshgen.runtime.upstream.health import (
    LAG_TOLERANCE_S,
    HealthState,
    OutlierDetector,
    failover_select,
    next_due,
    spread_phases,
    timer_verdict,
)
from meshgen.runtime.upstream.prober import Prober

CHECK = HealthCheck(kind="http", healthy_threshold=2, unhealthy_threshold=3)


@pytest.mark.parametrize(
    ("results", "states"),
    [
        ("FFF", "TTF"),
        ("FFTFFF", "TTTTTF"),
        ("FFFT", "TTFF"),
        ("FFFTT", "TTFFT"),
        ("FFFTFTT", "TTFFFFT"),
        ("TTTT", "TTTT"),
    ],
)
def test_health_state_thresholds(results: str, states: str) -> None:
    """Starts healthy; 3 consecutive failures to go down, 2 successes to come back."""
    state = HealthState(CHECK)
    seen = ""
    for r in results:
        state.on_result(r == "T")
        seen += "T" if state.healthy else "F"
    assert seen == states


def test_health_state_reports_flips_only() -> None:
    """on_result returns True exactly when the state changes."""
    state = HealthState(HealthCheck(kind="tcp", healthy_threshold=1, unhealthy_threshold=1))
    assert [state.on_result(ok) for ok in (True, False, False, True, True)] == [
        False,
        True,
        False,
        True,
        False,
    ]


def test_outlier_ejects_after_consecutive_failures_and_success_resets() -> None:
    """consecutive_5xx failures eject; a success in between resets the count."""
    od = OutlierDetector(OutlierDetection(consecutive_5xx=3, max_ejection_percent=50))
    assert not od.report("a", 503, 0.0, total=4)
    assert not od.report("a", "reset", 0.0, total=4)
    assert not od.report("a", 200, 0.0, total=4)
    assert not od.report("a", 500, 0.0, total=4)
    assert not od.report("a", "connect-failure", 0.0, total=4)
    assert od.report("a", "timeout", 0.0, total=4)
    assert od.is_ejected("a")


def test_outlier_max_ejection_percent_is_never_exceeded() -> None:
    """With 50 % of 4 endpoints, the third candidate stays in."""
    od = OutlierDetector(OutlierDetection(consecutive_5xx=1, max_ejection_percent=50))
    assert od.report("a", 500, 0.0, 4) and od.report("b", 500, 0.0, 4)
    assert not od.report("c", 500, 0.0, 4)


@pytest.mark.parametrize("percent", [0, 10, 33])
def test_outlier_may_always_eject_one_endpoint(percent: float) -> None:
    """As Envoy: one endpoint may be ejected whatever the percent; a second one only within it."""
    od = OutlierDetector(OutlierDetection(consecutive_5xx=1, max_ejection_percent=percent))
    assert od.report("a", 500, 0.0, 3) and od.is_ejected("a")
    assert not od.report("b", 500, 0.0, 3) and not od.is_ejected("b")
    od.review(od.ejected_until["a"])  # a returns: the one free ejection is available again
    assert od.report("b", 500, 1000.0, 3)


def test_outlier_ejection_time_grows_and_review_returns_and_decays() -> None:
    """Ejection lasts base x times ejected; review returns expired ones and decays the count."""
    od = OutlierDetector(
        OutlierDetection(consecutive_5xx=1, base_ejection_time_s=30, max_ejection_percent=100)
    )
    od.report("a", 500, 0.0, 2)
    assert od.review(29.0) == [] and od.is_ejected("a")
    assert od.review(30.0) == ["a"] and not od.is_ejected("a")
    od.report("a", 500, 31.0, 2)  # second ejection: 60 s
    assert od.times_ejected["a"] == 2
    assert od.review(90.0) == [] and od.review(91.0) == ["a"]
    od.review(100.0)
    assert od.times_ejected["a"] == 1
    od.forget([])
    assert od.times_ejected == {} and od.consecutive == {}


def zone_eps() -> tuple[Endpoint, ...]:
    return (
        Endpoint("10.0.0.1", 1, zone="a"),
        Endpoint("10.0.0.2", 1, zone="a"),
        Endpoint("10.0.0.3", 1, zone="b"),
        Endpoint("10.0.0.4", 1, zone="b"),
        Endpoint("10.0.0.5", 1, zone=None),
        Endpoint("10.0.0.6", 1, zone="c"),
    )


def select(down: set[str], zones: tuple[str, ...] = ("a", "b"), panic: float = 50) -> set[str]:
    chosen = failover_select(zone_eps(), lambda a: a.split(":")[0] not in down, zones, panic)
    return {e.host for e in chosen}


def test_failover_prefers_first_zone_meeting_panic_threshold() -> None:
    """Zone a at 50 % healthy still qualifies; below it, zone b takes over."""
    assert select(set()) == {"10.0.0.1", "10.0.0.2"}
    assert select({"10.0.0.1"}) == {"10.0.0.2"}
    assert select({"10.0.0.1"}, panic=60) == {"10.0.0.3", "10.0.0.4"}


def test_failover_no_zone_qualifies_uses_every_healthy_endpoint() -> None:
    """No listed zone qualifies -> every healthy endpoint, in any zone or none (the no-zone and
    unlisted endpoints are never preferred as a group of their own)."""
    assert select({"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}) == {"10.0.0.5", "10.0.0.6"}
    assert select({"10.0.0.1", "10.0.0.3"}, panic=60) == {
        "10.0.0.2",
        "10.0.0.4",
        "10.0.0.5",
        "10.0.0.6",
    }
    assert select({"10.0.0.1", "10.0.0.3", "10.0.0.5"}, panic=60) == {
        "10.0.0.2",
        "10.0.0.4",
        "10.0.0.6",
    }
    assert select({f"10.0.0.{i}" for i in range(1, 7)}) == set()


def test_failover_without_zones_is_all_healthy() -> None:
    """No zone list: every healthy endpoint."""
    assert select({"10.0.0.1"}, zones=()) == {f"10.0.0.{i}" for i in range(2, 7)}


@pytest.mark.parametrize("count", [1, 7, 1000, 10_000])
def test_first_probes_spread_evenly_over_the_whole_interval(count: int) -> None:
    """Every 100 ms of a 1 s interval gets its share of first probes (+-1 per stratum edge),
    sorted and inside the interval; two sidecars get different points (seeded jitter)."""
    phases = spread_phases(count, 1.0, random.Random(5))
    assert phases == sorted(phases) and phases[0] >= 0 and phases[-1] < 1.0
    buckets = [0] * 10
    for p in phases:
        buckets[int(p * 10)] += 1
    assert max(buckets) - min(buckets) <= 1 + (count < 10) * count
    assert spread_phases(count, 1.0, random.Random(6)) != phases


def test_probes_stay_on_their_grid_and_skip_missed_slots() -> None:
    """next_due keeps phase + k x interval: a late tick or a slow probe never moves the grid,
    and after a stall only the next slot comes (no burst making up the missed ones)."""
    assert next_due(10.3, 1.0, now=10.31) == pytest.approx(11.3)
    assert next_due(10.3, 1.0, now=11.0) == pytest.approx(11.3)  # tick 0.7 s late
    assert next_due(10.3, 1.0, now=14.05) == pytest.approx(14.3)  # 3 s stall: slots skipped
    assert next_due(10.3, 1.0, now=14.3) == pytest.approx(15.3)
    rng = random.Random(1)
    clock, due, fired = 0.0, 0.25, []
    for _ in range(200):  # a loop that runs each slot up to 40 ms late
        clock = due + rng.uniform(0.0, 0.04)
        fired.append(due)
        due = next_due(due, 1.0, clock)
    assert [round(f % 1.0, 9) for f in fired] == [0.25] * 200


def test_a_late_timer_is_loop_lag_not_an_endpoint_timeout() -> None:
    """Fired within LAG_TOLERANCE_S of its deadline: the endpoint timed out; later: the loop
    was busy, so the probe is re-checked instead of failed."""
    assert timer_verdict(5.0, 5.0) == "timeout"
    assert timer_verdict(5.0, 5.0 + LAG_TOLERANCE_S) == "timeout"
    assert timer_verdict(5.0, 5.0 + LAG_TOLERANCE_S + 0.001) == "recheck"
    assert timer_verdict(5.0, 9.0) == "recheck"


async def probe(check: HealthCheck, endpoint: Endpoint, tls: UpstreamTls | None = None) -> bool:
    """One probe through the real prober (its connection, limits and TLS identity check)."""
    results: asyncio.Queue[bool] = asyncio.Queue()
    prober = Prober(lambda _s, _a, ok: results.put_nowait(ok), random.Random(1))
    prober.add("svc", endpoint, replace(check, interval_s=0.01), tls)
    prober.start()
    try:
        return await asyncio.wait_for(results.get(), check.timeout_s + 2)
    finally:
        await prober.stop()


def endpoint_of(server: HTTPServer) -> Endpoint:
    return Endpoint(server.host, server.port)


def test_http_probe_checks_status(httpserver: HTTPServer) -> None:
    """200 passes; 503 fails; a custom expected status list is honoured."""
    httpserver.expect_request("/healthz").respond_with_data("ok", status=200)
    httpserver.expect_request("/down").respond_with_data("no", status=503)
    ep = endpoint_of(httpserver)
    assert asyncio.run(probe(HealthCheck(kind="http", path="/healthz"), ep))
    assert not asyncio.run(probe(HealthCheck(kind="http", path="/down"), ep))
    custom = HealthCheck(kind="http", path="/down", expected_statuses=(200, 503))
    assert asyncio.run(probe(custom, ep))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tcp_probe_open_and_closed(httpserver: HTTPServer) -> None:
    """TCP check passes on a listening port and fails on a closed one."""
    check = HealthCheck(kind="tcp")
    assert asyncio.run(probe(check, endpoint_of(httpserver)))
    assert not asyncio.run(probe(check, Endpoint("127.0.0.1", closed_port())))


def test_http_probe_times_out_on_silent_server() -> None:
    """A server that accepts and never answers fails the probe after timeout_s."""

    async def run() -> tuple[bool, float]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ok = await probe(HealthCheck(kind="http", timeout_s=0.2), Endpoint("127.0.0.1", port))
        elapsed = loop.time() - t0
        server.close()
        return ok, elapsed

    ok, elapsed = asyncio.run(run())
    assert not ok and 0.15 < elapsed < 2.0


def test_http_probe_garbage_response_fails() -> None:
    """A non-HTTP answer is a parser error, i.e. a failed probe, not a crash."""

    async def run() -> bool:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ok = await probe(HealthCheck(kind="http"), Endpoint("127.0.0.1", port))
        server.close()
        return ok

    assert not asyncio.run(run())


@pytest.fixture(scope="module")
def tls_server_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server-key.pem): the server is reviews.mesh.test (DNS SAN only)."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("reviews.mesh.test", "127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "server-key.pem"))
    return folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"


async def _tls_http_server(files: tuple[Path, Path, Path]) -> asyncio.Server:
    """A TLS server answering every request with 200 (what a healthy impostor would do)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files[1]), str(files[2]))

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(ok, "127.0.0.1", 0, ssl=ctx)


@pytest.mark.parametrize("kind", ["http", "tcp"])
@pytest.mark.parametrize(
    ("sans", "sni", "healthy"),
    [
        (("spiffe://shop/reviews",), None, False),  # chain fine, identity wrong: an impostor
        (("ratings.mesh.test",), None, False),
        (("reviews.mesh.test",), None, True),  # positive control
        ((), "reviews.mesh.test", True),  # no SANs: the SNI is the identity (OpenSSL checks)
        ((), "ratings.mesh.test", False),
    ],
)
def test_tls_probe_verifies_upstream_identity(
    tls_server_files: tuple[Path, Path, Path],
    kind: Literal["http", "tcp"],
    sans: tuple[str, ...],
    sni: str | None,
    healthy: bool,
) -> None:
    """Probes use the proxy's UpstreamTls: a certificate from the right CA with the wrong
    identity fails the check, so an impostor never looks healthy."""
    cfg = ClientTls(mode="simple", ca=str(tls_server_files[0]), sni=sni, subject_alt_names=sans)
    client = upstream_tls("reviews", cfg, tls_server_files[0].parent)
    assert client is not None

    async def run() -> bool:
        server = await _tls_http_server(tls_server_files)
        port = server.sockets[0].getsockname()[1]
        try:
            return await probe(HealthCheck(kind=kind), Endpoint("127.0.0.1", port), client)
        finally:
            server.close()

    assert asyncio.run(run()) is healthy
