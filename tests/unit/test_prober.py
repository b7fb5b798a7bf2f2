"""The health prober on a real event loop against real loopback servers.

- Keep-alive: every probe of an endpoint goes over one connection (Envoy's reuse_connection).
- Spread: first probes cover the whole interval, and later rounds keep the same spacing.
- Bounded: never more than ``limit`` probes in flight, and every endpoint is still probed.
- Loop lag: a loop blocked past a probe's timeout while the answer sits in the socket does
  not fail the endpoint (uvloop runs due timers before reading sockets, so without the rule
  this is a false timeout).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import uvloop

from meshgen.runtime.tables import Endpoint, HealthCheck
from meshgen.runtime.upstream.prober import MAX_STARTS_PER_TICK, Prober

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Backends:
    """``n`` loopback HTTP servers that count connections, requests and concurrency."""

    def __init__(self, delay: float = 0.0, on_connect: Callable[[], None] | None = None) -> None:
        self.delay = delay
        self.on_connect = on_connect
        self.connections: Counter[int] = Counter()
        self.requests: Counter[int] = Counter()
        self.times: dict[int, list[float]] = {}
        self.active = 0
        self.most_active = 0
        self.servers: list[asyncio.Server] = []

    async def start(self, n: int) -> list[Endpoint]:
        for _ in range(n):
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.servers.append(server)
        return [Endpoint("127.0.0.1", s.sockets[0].getsockname()[1]) for s in self.servers]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        self.connections[port] += 1
        if self.on_connect is not None:
            self.on_connect()
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests[port] += 1
                self.times.setdefault(port, []).append(time.monotonic())
                self.active += 1
                self.most_active = max(self.most_active, self.active)
                await asyncio.sleep(self.delay)
                self.active -= 1
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the prober closed the connection, or the test ends
        finally:
            writer.close()

    def close(self) -> None:
        for server in self.servers:
            server.close()


Results = list[tuple[str, bool]]


async def run_prober(
    backends: Backends, n: int, check: HealthCheck, seconds: float, limit: int = 1024,
    during: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Prober, Results]:  # fmt: skip
    """Probe ``n`` endpoints for ``seconds``; the prober (for its counters) and every result."""
    endpoints = await backends.start(n)
    results: Results = []
    prober = Prober(lambda _s, a, ok: results.append((a, ok)), random.Random(3), limit)
    for ep in endpoints:
        prober.add("svc", ep, check, None)
    prober.start()
    try:
        if during is not None:
            await during()
        await asyncio.sleep(seconds)
    finally:
        await prober.stop()
        backends.close()
    return prober, results


def phase(times: list[float], interval: float) -> float:
    """Circular mean of ``times`` modulo ``interval``, as a share of it in [0, 1)."""
    angles = [2 * math.pi * (t % interval) / interval for t in times]
    mean = math.atan2(sum(map(math.sin, angles)), sum(map(math.cos, angles)))
    return (mean / (2 * math.pi)) % 1.0


def test_keep_alive_one_connection_per_endpoint_and_probes_stay_spread() -> None:
    """40 endpoints at 100 ms for 1.2 s: one connection each, ~12 probes each, all passing;
    the endpoints' phases cover every quarter of the interval about evenly."""
    backends = Backends()
    check = HealthCheck(kind="http", path="/healthz", interval_s=0.1, timeout_s=0.5)
    _, results = asyncio.run(run_prober(backends, 40, check, 1.2))
    assert set(backends.connections.values()) == {1}
    assert min(backends.requests.values()) >= 10 and all(ok for _, ok in results)
    # each endpoint's phase in the 100 ms interval (circular mean, so a probe delayed by a
    # busy machine moves it by a fraction only): the 40 phases cover the interval evenly
    phases = [phase(ts, 0.1) for ts in backends.times.values()]
    quarters = Counter(int(p * 4) for p in phases)
    assert len(quarters) == 4 and all(5 <= n <= 15 for n in quarters.values()), quarters


def test_concurrent_probes_are_bounded_and_every_endpoint_is_probed() -> None:
    """Limit 3, 12 slow endpoints (each answer takes 50 ms): at most 3 in flight at once."""
    backends = Backends(delay=0.05)
    check = HealthCheck(kind="http", interval_s=0.2, timeout_s=1.0)
    prober, results = asyncio.run(run_prober(backends, 12, check, 0.8, limit=3))
    assert backends.most_active == 3 and prober.probes >= 12
    assert len(backends.requests) == 12 and all(ok for _, ok in results)


def test_a_blocked_loop_is_not_an_endpoint_timeout() -> None:
    """uvloop, timeout 200 ms: the loop stalls for 400 ms as the first probe goes out. No
    endpoint fails; the late timer was re-checked (uvloop runs due timers before it reads
    sockets, so counting it would have failed a healthy endpoint). (200 ms, not less: the 20
    backends answer from this same loop, which a busy 2-core machine can hold up for 100 ms.)"""
    connected = asyncio.Event()

    async def stall() -> None:
        await connected.wait()
        time.sleep(0.4)  # the whole loop stalls, as under a CPU burst

    backends = Backends(on_connect=connected.set)
    check = HealthCheck(kind="http", interval_s=0.3, timeout_s=0.2)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        prober, results = runner.run(run_prober(backends, 20, check, 0.5, during=stall))
    assert results and all(ok for _, ok in results), Counter(ok for _, ok in results)
    assert prober.lagged > 0


def test_after_a_stall_overdue_probes_go_out_in_slices() -> None:
    """600 endpoints all overdue after a 0.6 s stall: the first tick starts at most
    MAX_STARTS_PER_TICK of them (sockets get their turn between slices); all are then probed,
    and pass."""

    async def main() -> tuple[int, int]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        results: Results = []
        prober = Prober(lambda _s, a, ok: results.append((a, ok)), random.Random(3))
        check = HealthCheck(kind="tcp", interval_s=0.5, timeout_s=1.0)
        for i in range(600):
            prober.add(f"svc-{i}", Endpoint("127.0.0.1", port), check, None)
        prober.start()
        time.sleep(0.6)  # the loop stalls: every first slot passes
        while prober.probes == 0:
            await asyncio.sleep(0)
        first = prober.probes
        deadline = time.monotonic() + 10
        while len(results) < 600 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await prober.stop()
        server.close()
        return first, sum(ok for _, ok in results[:600])

    first, passed = asyncio.run(main())
    assert 0 < first <= MAX_STARTS_PER_TICK < 600 and passed == 600
