"""`python DIST` under change: split, failover while a backend dies, reload under load, drain."""

from __future__ import annotations

import http.client
import math
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from runtime_harness import (
    Runtime,
    backend,
    mesh_tables,
    run_dist,
    static,
    target,
    with_routes,
    write_dist,
)

from meshgen.runtime import tables as t

pytestmark = pytest.mark.e2e

RETRIES = t.RetryPolicy(
    attempts=2,
    per_try_timeout_s=2.0,
    backoff_base_s=0.001,
    backoff_max_s=0.005,
    budget_min_per_second=100.0,
)


def client(rt: Runtime) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(rt.host, rt.port, timeout=10)


def get(conn: http.client.HTTPConnection, host: str, path: str = "/") -> tuple[int, str]:
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    resp.read()
    return resp.status, resp.getheader("x-backend") or ""


def test_weighted_split_within_four_sigma(tmp_path: Path) -> None:
    """A 80/20 split over 1000 requests lands within 4 sigma of 20% on the minor branch."""
    with backend("a") as (a, _), backend("b") as (b, _):
        route = t.Route("split", t.Match(hosts=("shop",)), to=(target("a", 80), target("b", 20)))
        dist = write_dist(
            tmp_path / "dist", mesh_tables([static("a", [a]), static("b", [b])], [route])
        )
        with run_dist(dist) as rt:
            conn = client(rt)
            n = 1000
            seen = Counter(get(conn, "shop")[1] for _ in range(n))
    sigma = math.sqrt(n * 0.2 * 0.8)
    assert seen["a"] + seen["b"] == n
    assert abs(seen["b"] - 0.2 * n) < 4 * sigma, seen


def test_failover_zero_errors_while_backend_killed(tmp_path: Path) -> None:
    """With retries on, killing one of two endpoints mid-load fails no request."""
    with backend("a") as (a, proc_a), backend("b") as (b, _):
        route = t.Route("r", t.Match(hosts=("shop",)), to=(target("svc", retries=RETRIES),))
        dist = write_dist(tmp_path / "dist", mesh_tables([static("svc", [a, b])], [route]))
        with run_dist(dist) as rt:
            statuses: Counter[int] = Counter()
            backends: Counter[str] = Counter()
            conns = [client(rt) for _ in range(4)]
            for i in range(600):
                if i == 200:
                    proc_a.kill()
                    proc_a.wait()
                status, who = get(conns[i % 4], "shop")
                statuses[status] += 1
                backends[who] += 1
    assert statuses == Counter({200: 600}), statuses
    assert backends["a"] > 0 and backends["b"] > 300


def test_reload_under_load_zero_errors(tmp_path: Path) -> None:
    """SIGHUP: traffic moves to the new backend, no request fails, a bad DIST is refused."""
    with backend("a") as (a, _), backend("b") as (b, _):
        old = t.Route("r", t.Match(hosts=("shop",)), to=(target("a"),))
        tables = mesh_tables([static("a", [a]), static("b", [b])], [old])
        dist = write_dist(tmp_path / "dist", tables)
        with run_dist(dist) as rt:
            errors: list[str] = []
            seen: list[str] = []
            stop = threading.Event()

            def load() -> None:
                conn = client(rt)
                while not stop.is_set():
                    try:
                        status, who = get(conn, "shop")
                        seen.append(who)
                        if status != 200:
                            errors.append(str(status))
                    except Exception as exc:
                        errors.append(repr(exc))
                        conn = client(rt)

            threads = [threading.Thread(target=load) for _ in range(3)]
            for th in threads:
                th.start()
            try:
                deadline = time.monotonic() + 10
                while len(seen) < 100 and time.monotonic() < deadline:
                    time.sleep(0.01)
                new = t.Route("r", t.Match(hosts=("shop",)), to=(target("b"),))
                write_dist(dist, with_routes(tables, [new]))
                rt.proc.send_signal(signal.SIGHUP)
                while (not seen or seen[-1] != "b") and time.monotonic() < deadline:
                    time.sleep(0.01)
                mark = len(seen)
                while len(seen) < mark + 100 and time.monotonic() < deadline:
                    time.sleep(0.01)
                (dist / "mesh" / "routing.py").write_text("ROUTES = (\n")
                rt.proc.send_signal(signal.SIGHUP)
                while "reload refused" not in rt.log_text() and time.monotonic() < deadline:
                    time.sleep(0.02)
                mark = len(seen)
                while len(seen) < mark + 50 and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                stop.set()
                for th in threads:
                    th.join()
            assert "reload refused" in rt.log_text()
    assert errors == []
    assert seen[0] == "a" and seen[-1] == "b"
    first_b = seen.index("b")
    assert "a" not in seen[first_b + 10 :]  # at most in-flight ones finish on the old tables


def test_drain_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM: the in-flight request completes, new connections are refused, exit code 0."""
    with backend("a") as (a, _):
        route = t.Route("r", t.Match(hosts=("shop",)), to=(target("a"),))
        dist = write_dist(tmp_path / "dist", mesh_tables([static("a", [a])], [route]))
        with run_dist(dist) as rt:
            result: list[object] = []

            def slow() -> None:
                conn = client(rt)
                conn.request("GET", "/slow", headers={"Host": "shop", "x-delay": "1.0"})
                resp = conn.getresponse()
                result.append((resp.status, resp.read(), resp.getheader("connection")))

            th = threading.Thread(target=slow)
            th.start()
            time.sleep(0.3)  # let the request reach the backend (it sleeps 1 s there)
            rt.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            refused = False
            while time.monotonic() < deadline and not refused:
                probe = client(rt)
                try:
                    probe.connect()
                    time.sleep(0.02)
                except (ConnectionRefusedError, ConnectionResetError):
                    refused = True  # a reset here: the listening socket closed mid-handshake
                finally:
                    probe.close()
            th.join()
            assert rt.proc.wait(10) == 0
    assert refused
    assert result == [(200, b"a GET /slow\n", "close")]


def test_timeout_504_and_large_streamed_body(tmp_path: Path) -> None:
    """A slow backend past the route timeout is 504; a 20 MiB body streams through intact."""
    with backend("a") as (a, _):
        routes = [
            t.Route("slow", t.Match(hosts=("slow",)), to=(target("a", timeout=0.3),)),
            t.Route("r", t.Match(hosts=("shop",)), to=(target("a"),)),
        ]
        dist = write_dist(tmp_path / "dist", mesh_tables([static("a", [a])], routes))
        with run_dist(dist) as rt:
            start = time.monotonic()
            status, _, _ = rt.request("GET", "/", "slow", {"x-delay": "2"})
            assert status == 504 and time.monotonic() - start < 1.5
            payload = bytes(range(256)) * (20 * 4096)
            status, _, body = rt.request("PUT", "/big", "shop", body=payload, timeout=30)
            assert status == 200 and body == b"a PUT /big\n" + payload
