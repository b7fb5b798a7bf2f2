"""`python DIST` under change: split, failover while a backend dies, reload under load, drain."""

from __future__ import annotations

import http.client
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from polling import eventually
from runtime_harness import Runtime, backend, build_dist, run_dist, spec

pytestmark = pytest.mark.e2e

RETRIES = (
    "{attempts: 2, per_try_timeout: 2s, backoff: {base: 1ms, max: 5ms}, "
    "budget: {min_per_second: 100}}"
)


def one_route(services: dict[str, str], to: str, route: str = "r", host: str = "shop") -> str:
    """A spec: services ``{name: "addr[,addr]"}`` and one route ``host`` -> ``to`` (YAML)."""
    lines = ["services:"]
    for name, addrs in services.items():
        eps = ", ".join(f'{{address: "{a}"}}' for a in addrs.split(","))
        lines.append(f"  {name}: {{discovery: {{static: [{eps}]}}}}")
    lines.append(f"routes: [{{name: {route}, match: {{host: {host}}}, to: {to}}}]")
    return spec("\n".join(lines) + "\n")


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
        to = "[{service: a, weight: 80}, {service: b, weight: 20}]"
        dist = build_dist(tmp_path / "dist", one_route({"a": a, "b": b}, to, "split"))
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
        text = one_route({"svc": f"{a},{b}"}, "[{service: svc}]")
        text += f"defaults: {{retries: {RETRIES}}}\n"
        dist = build_dist(tmp_path / "dist", text)
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


class Load:
    """Three threads sending keep-alive requests until ``stop``; backends seen (in all and by
    each thread, whose requests go one after another), errors."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.seen: list[str] = []
        self.by_thread: list[list[str]] = [[] for _ in range(3)]
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(s,)) for s in self.by_thread]

    def _run(self, mine: list[str]) -> None:
        conn = client(self.rt)
        while not self.stop.is_set():
            try:
                status, who = get(conn, "shop")
                self.seen.append(who)
                mine.append(who)
                if status != 200:
                    self.errors.append(str(status))
            except Exception as exc:
                self.errors.append(repr(exc))
                conn = client(self.rt)

    def __enter__(self) -> Load:
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for th in self.threads:
            th.join()

    def wait(self, condition: Callable[[], bool]) -> None:
        last = lambda: f"errors: {self.errors[-5:]}, seen: {self.seen[-5:]}"  # noqa: E731
        eventually(condition, timeout=20, interval=0.01, what="the load", context=last)

    def all_on(self, new: str) -> bool:
        """Every thread's latest answer came from ``new``."""
        return all(mine and mine[-1] == new for mine in self.by_thread)

    def more(self, n: int) -> None:
        mark = len(self.seen)
        self.wait(lambda: len(self.seen) >= mark + n)

    def switched_cleanly(self, old: str, new: str) -> None:
        """No error; ``old`` first; on each thread ``new`` last and, once seen, never ``old``
        again (a request sent before the switch may finish on the old tables after another
        thread's first ``new``, but one sent after a ``new`` answer starts on the new tables)."""
        assert self.errors == []
        assert self.seen[0] == old
        for mine in self.by_thread:
            assert mine[-1] == new and old not in mine[mine.index(new) :], mine


def test_reload_under_load_zero_errors(tmp_path: Path) -> None:
    """SIGHUP: traffic moves to the new backend, no request fails, a bad DIST is refused."""
    with backend("a") as (a, _), backend("b") as (b, _):
        dist = build_dist(tmp_path / "dist", one_route({"a": a, "b": b}, "[{service: a}]"))
        with run_dist(dist) as rt, Load(rt) as load:
            load.more(100)
            build_dist(dist, one_route({"a": a, "b": b}, "[{service: b}]"))
            rt.proc.send_signal(signal.SIGHUP)
            load.wait(lambda: load.all_on("b"))
            load.more(100)
            (dist / "mesh" / "routing.py").write_text("ROUTES = (\n")
            rt.proc.send_signal(signal.SIGHUP)
            load.wait(lambda: "reload refused" in rt.log_text())
            load.more(50)
            assert "reload refused" in rt.log_text()
    load.switched_cleanly("a", "b")


def test_watch_rebuild_switches_routing_without_failed_requests(tmp_path: Path) -> None:
    """--watch: `meshgen build` over the running DIST moves traffic with no failed request,
    in exactly one reload (never one of the half-swapped DIST)."""
    with backend("a") as (a, _), backend("b") as (b, _):
        dist = build_dist(tmp_path / "dist", one_route({"a": a, "b": b}, "[{service: a}]"))
        with run_dist(dist, "--watch") as rt, Load(rt) as load:
            load.more(100)
            build_dist(dist, one_route({"a": a, "b": b}, "[{service: b}]"))
            load.wait(lambda: load.all_on("b"))
            load.more(100)
            # logged once the reload's table diff (a thread) is done, maybe after the switch
            load.wait(lambda: "reloaded" in rt.log_text())
            assert rt.log_text().count("reloaded") == 1
            assert "reload refused" not in rt.log_text()
    load.switched_cleanly("a", "b")


def test_drain_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM: the in-flight request completes, new connections are refused, exit code 0."""
    with backend("a") as (a, _):
        dist = build_dist(tmp_path / "dist", one_route({"a": a}, "[{service: a}]"))
        with run_dist(dist) as rt:
            result: list[object] = []
            arrived = tmp_path / "arrived"
            headers = {"Host": "shop", "x-delay": "1.0", "x-arrived": str(arrived)}

            def slow() -> None:
                conn = client(rt)
                conn.request("GET", "/slow", headers=headers)
                resp = conn.getresponse()
                result.append((resp.status, resp.read(), resp.getheader("connection")))

            th = threading.Thread(target=slow)
            th.start()
            eventually(arrived.exists, what="the request at the backend (it sleeps 1 s there)")
            rt.proc.send_signal(signal.SIGTERM)

            def refused() -> bool:
                probe = client(rt)
                try:
                    probe.connect()
                except (ConnectionRefusedError, ConnectionResetError):
                    return True  # a reset here: the listening socket closed mid-handshake
                finally:
                    probe.close()
                return False

            eventually(refused, timeout=5, what="new connections refused")
            th.join()
            assert rt.proc.wait(10) == 0
    assert result == [(200, b"a GET /slow\n", "close")]


def test_timeout_504_and_large_streamed_body(tmp_path: Path) -> None:
    """A slow backend past the route timeout is 504; a 20 MiB body streams through intact."""
    with backend("a") as (a, _):
        text = spec(
            f"""
            services: {{a: {{discovery: {{static: [{{address: "{a}"}}]}}}}}}
            routes:
              - {{name: slow, match: {{host: slow}}, to: [{{service: a}}], timeout: 300ms}}
              - {{name: r, match: {{host: shop}}, to: [{{service: a}}]}}
            """
        )
        dist = build_dist(tmp_path / "dist", text)
        with run_dist(dist) as rt:
            start = time.monotonic()
            status, _, _ = rt.request("GET", "/", "slow", {"x-delay": "2"})
            assert status == 504 and time.monotonic() - start < 1.5
            payload = bytes(range(256)) * (20 * 4096)
            status, _, body = rt.request("PUT", "/big", "shop", body=payload, timeout=30)
            assert status == 200 and body == b"a PUT /big\n" + payload


def test_reload_drops_the_series_of_removed_endpoints(tmp_path: Path) -> None:
    """A reload without service b ends b's meshgen_endpoint_healthy series; a's stays."""
    with backend("a") as (a, _), backend("b") as (b, _):
        dist = build_dist(tmp_path / "dist", one_route({"a": a, "b": b}, "[{service: a}]"))
        with run_dist(dist) as rt:

            def series() -> set[str]:
                lines = rt.admin("/metrics").splitlines()
                return {x for x in lines if x.startswith("meshgen_endpoint_healthy{")}

            has = 'meshgen_endpoint_healthy{service="%s",endpoint="%s"} 1'
            assert series() == {has % ("a", a), has % ("b", b)}
            build_dist(dist, one_route({"a": a}, "[{service: a}]"))
            rt.proc.send_signal(signal.SIGHUP)
            eventually(lambda: series() == {has % ("a", a)}, context=lambda: rt.log_text()[-2000:])
