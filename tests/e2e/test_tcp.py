"""tcp listeners on `python DIST`: bytes to weighted tcp services, end to end.

Every test runs the real runtime in front of tcp_echo.py servers (which greet with their name,
echo with flow control and answer ``bye N`` to a half-close): large transfers both ways with
the runtime's peak memory bounded, half-close, the idle timeout, the listener's and the
service's connection limits, the maximum connection age, connect attempts with outlier
ejection, active health checks (tcp, and http on a separate port), and the balancers.
"""

from __future__ import annotations

import hashlib
import http.server
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import require_binary
from polling import eventually
from ports import refused_port
from runtime_harness import Runtime, build_dist, run_dist
from tcp_harness import closed, connect, echo, echoes, exact, line, static, tcp_spec
from test_proxy_semantics import count

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MIB = 1 << 20
DB = "  - {name: db, address: '127.0.0.1:0', protocol: tcp, to: [{service: db}]%s}\n"


def db(*addresses: str, extra: str = "") -> str:
    """Service ``db`` (tcp) on ``addresses``, with ``extra`` flow-mapping fields."""
    return f"db: {{protocol: tcp, discovery: {static(*addresses)}{extra}}}\n"


@contextmanager
def runtime(tmp_path: Path, services: str, listeners: str = DB % "") -> Iterator[Runtime]:
    with run_dist(build_dist(tmp_path / "dist", tcp_spec(services, listeners))) as rt:
        yield rt


def test_bytes_both_ways_and_metrics(tmp_path: Path) -> None:
    """The endpoint's greeting, an echo, and the byte counts per direction."""
    with (
        echo("one") as (addr, _),
        runtime(tmp_path, db(addr)) as rt,
    ):
        with connect(rt, "db") as s:
            assert line(s) == b"one\n"
            s.sendall(b"ping\n")
            assert exact(s, 5) == b"ping\n"
            eventually(lambda: count(rt, "meshgen_tcp_active_connections", service="db") == 1)
        eventually(lambda: count(rt, "meshgen_tcp_active_connections", service="db") == 0)
        assert count(rt, "meshgen_tcp_connections_total", listener="db", service="db") == 1
        assert count(rt, "meshgen_tcp_bytes_total", direction="rx") == 5
        assert count(rt, "meshgen_tcp_bytes_total", direction="tx") == 4 + 5 + len(b"bye 5\n")
        assert count(rt, "meshgen_upstream_requests_total", code="connected") == 1
        assert count(rt, "meshgen_requests_total") == 0  # a connection is not a request
        check = subprocess.run([require_binary("promtool"), "check", "metrics"],
                               input=rt.admin("/metrics"), capture_output=True, text=True,
                               timeout=30)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found[1]) * 1024


def test_large_transfers_both_ways_stay_out_of_memory(tmp_path: Path) -> None:
    """64 MiB each way at once, the client reading nothing for the first 1.5 s: backpressure
    stops the sender, the runtime's peak memory stays near idle, every byte arrives in order."""
    size, block = 64 * MIB, random.Random(7).randbytes(MIB)
    with (
        echo("big") as (addr, _),
        runtime(tmp_path, db(addr)) as rt,
    ):
        idle_peak = _peak_rss(rt.proc.pid)
        with connect(rt, "db", timeout=30) as s:
            assert line(s) == b"big\n"
            sent = hashlib.sha256()

            def send() -> None:
                for i in range(size // MIB):
                    chunk = i.to_bytes(8, "big") + block[8:]
                    sent.update(chunk)
                    s.sendall(chunk)
                s.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(1.5)  # the stall: a proxy without backpressure would buffer it all
            got, n = hashlib.sha256(), 0
            while n < size:
                chunk = s.recv(min(MIB, size - n))
                assert chunk, f"closed after {n} bytes"
                got.update(chunk)
                n += len(chunk)
            sender.join(30)
            assert line(s) == b"bye %d\n" % size
            assert got.hexdigest() == sent.hexdigest()
        peak = _peak_rss(rt.proc.pid)
        assert peak - idle_peak < 24 * MIB, (idle_peak, peak)


def test_half_close_passes_the_fin_and_the_answer_comes_back(tmp_path: Path) -> None:
    with echo("hc") as (addr, _), runtime(tmp_path, db(addr)) as rt, connect(rt, "db") as s:
        assert line(s) == b"hc\n"
        s.sendall(b"abc")
        s.shutdown(socket.SHUT_WR)  # our FIN reaches the endpoint, which then answers
        assert exact(s, 3) == b"abc"
        assert line(s) == b"bye 3\n"
        assert closed(s)


def test_idle_timeout_closes_a_silent_connection_only(tmp_path: Path) -> None:
    with (
        echo("idle") as (addr, _),
        runtime(tmp_path, db(addr, extra=", idle_timeout: 1s")) as rt,
        connect(rt, "db") as busy,
        connect(rt, "db") as quiet,
    ):
        assert line(busy) == b"idle\n" and line(quiet) == b"idle\n"
        started = time.monotonic()
        for _ in range(8):  # 2 s of traffic every 250 ms: never idle for 1 s
            busy.sendall(b"x")
            assert exact(busy, 1) == b"x"
            time.sleep(0.25)
        quiet.settimeout(5)
        assert closed(quiet)
        assert time.monotonic() - started < 5
        busy.sendall(b"y")
        assert exact(busy, 1) == b"y"


def test_max_connection_duration_ends_a_busy_connection(tmp_path: Path) -> None:
    listeners = DB % ", limits: {max_connection_duration: 1s}"
    with (
        echo("age") as (addr, _),
        runtime(tmp_path, db(addr), listeners) as rt,
        connect(rt, "db") as s,
    ):
        assert line(s) == b"age\n"
        started = time.monotonic()
        with pytest.raises((ConnectionError, OSError)):
            while time.monotonic() - started < 5:
                s.sendall(b"z")
                if exact(s, 1) != b"z":
                    break
                time.sleep(0.05)
        assert 0.8 < time.monotonic() - started < 5


def test_listener_and_service_connection_limits(tmp_path: Path) -> None:
    """limits.max_connections refuses at the listener, circuit_breaker.max_connections at
    the service; both are counted, and a freed slot is used again."""
    services = (
        f"db: {{protocol: tcp, discovery: {static('%s')}}}\n"
        f"small: {{protocol: tcp, discovery: {static('%s')}, "
        "circuit_breaker: {max_connections: 1}}\n"
    )
    listeners = (
        DB % ", limits: {max_connections: 2}"
        + "  - {name: small, address: '127.0.0.1:0', protocol: tcp, to: [{service: small}]}\n"
    )
    with (
        echoes("a", "b") as addrs,
        runtime(tmp_path, services % (addrs["a"], addrs["b"]), listeners) as rt,
    ):
        one, two = connect(rt, "db"), connect(rt, "db")
        assert line(one) == line(two) == b"a\n"
        with connect(rt, "db") as third:
            assert closed(third)
        assert (
            count(rt, "meshgen_connections_rejected_total", listener="db", reason="max_connections")
            == 1
        )
        one.close()
        eventually(lambda: count(rt, "meshgen_tcp_active_connections", listener="db") == 1)
        with connect(rt, "db") as again:
            assert line(again) == b"a\n"
        two.close()
        with connect(rt, "small") as first, connect(rt, "small") as second:
            assert line(first) == b"b\n"
            assert closed(second)
        assert (
            count(rt, "meshgen_connections_rejected_total", listener="small", reason="circuit_open")
            == 1
        )


def test_connect_attempts_skip_a_dead_endpoint_and_outlier_detection_ejects_it(
    tmp_path: Path,
) -> None:
    """retries.attempts are further connects elsewhere; connect failures eject the endpoint."""
    services = (
        "db:\n  protocol: tcp\n  discovery: %s\n  retries: {attempts: 1}\n"
        "  outlier_detection: {consecutive_5xx: 2, base_ejection_time: 60s, "
        "max_ejection_percent: 50}\n"
    )
    with refused_port() as dead, echo("live") as (addr, _):
        dead_addr = f"127.0.0.1:{dead}"
        with runtime(tmp_path, services % static(dead_addr, addr)) as rt:
            for _ in range(6):
                with connect(rt, "db") as s:
                    assert line(s) == b"live\n"
            failures = count(
                rt, "meshgen_upstream_requests_total", endpoint=dead_addr, code="connect-failure"
            )
            assert failures == 2  # then ejected: round robin no longer picks it
            assert count(rt, "meshgen_ejections_total", endpoint=dead_addr) == 1
            assert count(rt, "meshgen_retries_total", service="db") == 2
            assert count(rt, "meshgen_endpoint_healthy", endpoint=dead_addr) == 0


def test_no_endpoint_left_closes_and_counts(tmp_path: Path) -> None:
    with (
        refused_port() as dead,
        runtime(
            tmp_path,
            db(f"127.0.0.1:{dead}", extra=", retries: {attempts: 2}"),
        ) as rt,
    ):
        with connect(rt, "db") as s:
            assert closed(s)
        assert count(rt, "meshgen_connections_rejected_total", reason="connect_failure") == 1
        assert count(rt, "meshgen_upstream_requests_total", code="connect-failure") == 3


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_http_health_check_on_a_health_port(tmp_path: Path) -> None:
    """A tcp service checked by http on health_check.port: failing the check takes the
    endpoint out of rotation while its traffic port still accepts."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    services = (
        "db:\n  protocol: tcp\n  discovery: %s\n"
        f"  health_check: {{http: {{path: /ready}}, port: {port}, interval: 200ms, "
        "timeout: 200ms, unhealthy_threshold: 1, healthy_threshold: 1}\n"
    )
    try:
        with echo("checked") as (addr, _), runtime(tmp_path, services % static(addr)) as rt:
            eventually(lambda: count(rt, "meshgen_endpoint_healthy", endpoint=addr) == 1)
            with connect(rt, "db") as s:
                assert line(s) == b"checked\n"
            _Health.status = 503
            eventually(lambda: count(rt, "meshgen_endpoint_healthy", endpoint=addr) == 0)
            with connect(rt, "db") as s:
                assert closed(s)
            assert (
                count(rt, "meshgen_connections_rejected_total", reason="no_healthy_endpoint") == 1
            )
    finally:
        _Health.status = 200
        server.shutdown()
        server.server_close()


def test_tcp_health_check_and_a_killed_endpoint(tmp_path: Path) -> None:
    services = (
        "db:\n  protocol: tcp\n  discovery: %s\n"
        "  health_check: {tcp: {}, interval: 200ms, timeout: 200ms, unhealthy_threshold: 1}\n"
    )
    with (
        echoes("a") as live,
        echo("b") as (dying, proc),
        runtime(tmp_path, services % static(live["a"], dying)) as rt,
    ):
        proc.kill()
        proc.wait()
        eventually(lambda: count(rt, "meshgen_endpoint_healthy", endpoint=dying) == 0)
        for _ in range(4):
            with connect(rt, "db") as s:
                assert line(s) == b"a\n"


def test_least_request_counts_open_connections(tmp_path: Path) -> None:
    """Three connections land 2 + 1; closing the two leaves loads 0 and 1, and the next goes
    to the emptier endpoint (round robin would pick the other one: it cycles a, b, a, b)."""
    services = (
        "db:\n  protocol: tcp\n  discovery: %s\n"
        "  load_balancer: {policy: least_request, choice_count: 100}\n"  # 2^-100: no ties left
    )
    with (
        echoes("a", "b") as addrs,
        runtime(tmp_path, services % static(addrs["a"], addrs["b"])) as rt,
    ):
        socks = [connect(rt, "db") for _ in range(3)]
        names = [line(s) for s in socks]
        busy = max(set(names), key=names.count)
        assert sorted(names.count(n) for n in set(names)) == [1, 2]
        for s, name in zip(socks, names, strict=True):
            if name == busy:
                s.close()
        eventually(lambda: count(rt, "meshgen_tcp_active_connections") == 1)
        with connect(rt, "db") as s:
            assert line(s) == busy
        for s in socks:
            s.close()


def test_source_ip_hashing_keeps_a_client_on_one_endpoint(tmp_path: Path) -> None:
    services = (
        "db:\n  protocol: tcp\n  discovery: %s\n"
        "  load_balancer: {policy: maglev, hash_on: {source_ip: true}}\n"
    )
    with (
        echoes("a", "b", "c") as addrs,
        runtime(tmp_path, services % static(*addrs.values())) as rt,
    ):
        seen = set()
        for _ in range(6):
            with connect(rt, "db") as s:
                seen.add(line(s))
        assert len(seen) == 1


def test_weighted_split_over_services(tmp_path: Path) -> None:
    services = (
        f"one: {{protocol: tcp, discovery: {static('%s')}}}\n"
        f"two: {{protocol: tcp, discovery: {static('%s')}}}\n"
    )
    listeners = (
        "  - {name: db, address: '127.0.0.1:0', protocol: tcp, "
        "to: [{service: one, weight: 100}, {service: two, weight: 0}]}\n"
        "  - {name: split, address: '127.0.0.1:0', protocol: tcp, "
        "to: [{service: one, weight: 50}, {service: two, weight: 50}]}\n"
    )
    with (
        echoes("a", "b") as addrs,
        runtime(tmp_path, services % (addrs["a"], addrs["b"]), listeners) as rt,
    ):
        for _ in range(3):
            with connect(rt, "db") as s:
                assert line(s) == b"a\n"
        got = set()
        for _ in range(40):  # P(only one side in 40 draws at 50/50) = 2^-39
            with connect(rt, "split") as s:
                got.add(line(s))
        assert got == {b"a\n", b"b\n"}
        assert count(rt, "meshgen_tcp_connections_total", listener="split", service="one") > 0


def test_a_reload_moves_new_connections_and_keeps_open_ones(tmp_path: Path) -> None:
    """SIGHUP with another ``to``: new connections go to the new service on the same port,
    the connection opened before keeps flowing to the old one."""
    services = f"one: {{protocol: tcp, discovery: {static('%s')}}}\n" + (
        f"two: {{protocol: tcp, discovery: {static('%s')}}}\n"
    )
    listener = "  - {name: db, address: '127.0.0.1:0', protocol: tcp, to: [{service: %s}]}\n"
    with echoes("a", "b") as addrs:
        text = tcp_spec(services % (addrs["a"], addrs["b"]), listener % "one")
        dist = build_dist(tmp_path / "dist", text)
        with run_dist(dist) as rt, connect(rt, "db") as old:
            assert line(old) == b"a\n"
            build_dist(dist, text.replace("service: one}", "service: two}"))
            rt.proc.send_signal(signal.SIGHUP)
            eventually(lambda: "reloaded" in rt.log_text())
            with connect(rt, "db") as new:
                assert line(new) == b"b\n"
            old.sendall(b"still here")
            assert exact(old, 10) == b"still here"


@contextmanager
def unanswered() -> Iterator[str]:
    """An address whose connects hang: a listener whose accept queue is full (SYNs dropped)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        filler = socket.create_connection(srv.getsockname(), timeout=5)
        with filler:
            yield f"127.0.0.1:{srv.getsockname()[1]}"


def test_a_client_flooding_while_the_endpoint_connects_is_paused(tmp_path: Path) -> None:
    """The endpoint's connect hangs: the client's 32 MiB flood meets a paused reader (at most
    one read waits in the runtime), peak memory stays put, and after connect_timeout the
    client is closed and counted."""
    with unanswered() as addr, runtime(tmp_path, db(addr, extra=", connect_timeout: 2s")) as rt:
        idle_peak = _peak_rss(rt.proc.pid)
        sent = 0
        with connect(rt, "db", timeout=10) as s:
            chunk = b"\0" * MIB
            with pytest.raises(OSError):  # blocked by backpressure, then reset or closed
                for _ in range(32):
                    s.sendall(chunk)
                    sent += MIB
            assert sent < 32 * MIB
        eventually(
            lambda: count(rt, "meshgen_connections_rejected_total", reason="connect_failure") == 1
        )
        assert _peak_rss(rt.proc.pid) - idle_peak < 8 * MIB
