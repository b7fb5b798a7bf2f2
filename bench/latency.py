"""Added latency at a constant request rate: meshgen (pure and compiled) vs HAProxy, open loop.

Usage: ``python bench/latency.py [--rate 1000] [--duration 10] [--rounds 3] [--baseline REF]``.
Needs the Debian packages haproxy and nginx-light, a C compiler for the compiled runtime (it is
built into the machine's cache first, as ``python DIST --accelerate`` does).

What it measures: requests go out at a fixed schedule (``--rate`` per second, spread over
``--connections`` keep-alive connections), whether or not earlier ones came back. A request's
latency runs from its *scheduled* send time to the end of its response, so a stall that delays
later sends counts against every request it delayed (no coordinated omission, as wrk2); a
request whose connection is still busy waits for the next free one, and that wait counts too.
Each round measures, one after the other: nginx directly, then through HAProxy 2.6
(nbthread 1), meshgen's pure runtime and meshgen's compiled runtime (the same DIST, chosen by
``MESHGEN_RUNTIME``). "Added" is a proxy's p50 / p99 minus the direct call's in the same round;
the table shows the median over rounds. ``--baseline REF`` adds the DIST that git commit REF's
compiler builds from the same mesh.yaml (so, that commit's runtime), compiled (``python DIST
--accelerate`` first; a cached build is reused), measured in every round right after or before
this tree's compiled runtime (the two swap places every round): a same-run A/B of a runtime
change, both added latencies printed per round. Proxies are pinned to CPU 0, nginx and this
load generator to CPU 1 (``taskset``). The generator is Python (uvloop, httptools' parser),
paced by an interval timer (see ``open_loop``); what jitter it has is in every number, the direct
call's too, and each round prints its p99 lateness (how late it sent the requests) per setup.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httptools
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy import build_at, process, stage, wait_answering
from runtime_harness import run_dist

from meshgen.resources import runtime_dir
from meshgen.runtime.accelerate import build

Run = tuple[list[float], list[float]]  # latencies, the generator's own lateness (seconds)
REQUEST = b"GET /api/items HTTP/1.1\r\nHost: shop\r\nUser-Agent: latency\r\n\r\n"


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, done: Callable[[Connection, float], None]) -> None:
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.scheduled = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def send(self, scheduled: float) -> None:
        self.scheduled = scheduled
        assert self.transport is not None
        self.transport.write(REQUEST)

    def on_message_complete(self) -> None:
        self.done(self, time.perf_counter() - self.scheduled)


async def open_loop(port: int, rate: float, duration: float, connections: int) -> Run:
    """Latencies (seconds) of ``rate * duration`` requests sent on schedule to ``port``, and
    how late the generator itself sent each one.

    The schedule is paced by an interval timer (``setitimer``, microsecond resolution) whose
    SIGALRM wakes the event loop once per request slot: an ``asyncio.sleep`` to the next slot
    wakes on libuv's millisecond clock, which made the generator send 0.2-0.3 ms late at the
    median and 0.65-0.76 ms at p99 (measured against nginx directly), a noise as large as the
    added latencies being compared."""
    loop = asyncio.get_running_loop()
    idle: collections.deque[Connection] = collections.deque()
    waiting: collections.deque[float] = collections.deque()  # scheduled times with no connection
    latencies: list[float] = []
    lateness: list[float] = []

    def done(conn: Connection, latency: float) -> None:
        latencies.append(latency)
        if waiting:
            conn.send(waiting.popleft())
        else:
            idle.append(conn)

    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: Connection(done), "127.0.0.1", port)
        idle.append(conn)
    total, period = int(rate * duration), 1 / rate
    all_sent = loop.create_future()
    sent = 0
    start = time.perf_counter() + 0.01

    def tick() -> None:
        nonlocal sent
        now = time.perf_counter()
        while sent < total and start + sent * period <= now:
            scheduled = start + sent * period
            lateness.append(now - scheduled)
            if idle:
                idle.popleft().send(scheduled)
            else:
                waiting.append(scheduled)
            sent += 1
        if sent == total and not all_sent.done():
            all_sent.set_result(None)

    loop.add_signal_handler(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, start - time.perf_counter(), period)
    try:
        await all_sent
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        loop.remove_signal_handler(signal.SIGALRM)
    deadline = time.perf_counter() + 10
    while len(latencies) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    for conn in idle:
        assert conn.transport is not None
        conn.transport.close()
    return latencies, lateness


def percentiles(port: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """(p50, p99, the generator's p99 lateness) in ms of one open-loop run (after one second of
    warm-up at the same rate)."""
    uvloop.run(open_loop(port, args.rate, 1.0, args.connections))
    got, late = uvloop.run(open_loop(port, args.rate, args.duration, args.connections))
    q = statistics.quantiles(got, n=100, method="inclusive")
    lq = statistics.quantiles(late, n=100, method="inclusive")
    return 1000 * q[49], 1000 * q[98], 1000 * lq[98]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the DIST git commit REF builds (its runtime, compiled): an A/B",
    )
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})  # the load generator shares CPU 1 with nginx
    print(f"compiled runtime: {build(runtime_dir())}", flush=True)
    base_name = f"meshgen at {args.baseline}"
    with tempfile.TemporaryDirectory(prefix="meshgen-latency-") as tmp:
        d = Path(tmp)
        staged = stage(d)
        dist, nginx_port, haproxy_port = staged.dist, staged.nginx_port, staged.haproxy_port
        nginx_cmd = ["taskset", "-c", "1", "nginx", "-c", str(d / "nginx.conf")]
        ha_cmd = ["taskset", "-c", "0", "haproxy", "-db", "-f", str(d / "haproxy.cfg")]
        with (
            process(nginx_cmd, d / "nginx.log", staged.nginx_sock, staged.nginx_env()),
            process(ha_cmd, d / "ha.log", staged.haproxy_sock),
            run_dist(dist, runtime="pure") as pure,
            run_dist(dist, runtime="compiled") as compiled,
            contextlib.ExitStack() as stack,
        ):
            runtimes = [pure.proc.pid, compiled.proc.pid]
            targets = {
                "direct nginx": nginx_port,
                "haproxy 2.6 (nbthread 1)": haproxy_port,
                "meshgen pure": pure.port,
                "meshgen compiled": compiled.port,
            }
            if args.baseline:
                base_dist = build_at(args.baseline, dist.parent / "mesh.yaml", d)
                accelerate = [sys.executable, str(base_dist), "--accelerate"]
                subprocess.run(accelerate, check=True, capture_output=True)
                before = stack.enter_context(run_dist(base_dist, runtime="compiled"))
                runtimes.append(before.proc.pid)
                targets[base_name] = before.port
            for pid in runtimes:
                subprocess.run(["taskset", "-acp", "0", str(pid)], check=True, capture_output=True)
            wait_answering(nginx_port)
            wait_answering(haproxy_port)
            added: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
            for n in range(args.rounds):
                order = list(targets)
                if args.baseline and n % 2:  # the A/B pair swaps places every round
                    order[-2:] = order[:-3:-1]
                got = {name: percentiles(targets[name], args) for name in order}
                base = got["direct nginx"]
                for name, (p50, p99, _) in got.items():
                    added[name].append((p50 - base[0], p99 - base[1]))
                shown = [f"{name}: p50 {p50:.3f} p99 {p99:.3f} (sent late p99 {late:.3f})"
                         for name, (p50, p99, late) in got.items()]  # fmt: skip
                print(f"round {n + 1} (ms): " + " | ".join(shown), flush=True)
    print(
        f"{args.rate:.0f} req/s open loop, {args.connections} connections, {args.duration:.0f} s "
        f"per run, median over {args.rounds} alternating rounds of the added latency (ms)"
    )
    ha = added["haproxy 2.6 (nbthread 1)"]
    ha_p99 = statistics.median(p99 for _, p99 in ha)
    print(f"| {'setup':<26} | {'added p50':>9} | {'added p99':>9} | {'p99 vs HAProxy':>14} |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 11}|{'-' * 16}|")
    for name, rows in added.items():
        if name == "direct nginx":
            continue
        p50 = statistics.median(a for a, _ in rows)
        p99 = statistics.median(b for _, b in rows)
        print(f"| {name:<26} | {p50:>9.3f} | {p99:>9.3f} | {p99 / ha_p99:>13.2f}x |")
    if args.baseline:
        for name in (base_name, "meshgen compiled"):
            shown_rows = ", ".join(f"{a:.3f} / {b:.3f}" for a, b in added[name])
            print(f"same-run A/B, added p50 / p99 ms per round, {name}: {shown_rows}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
