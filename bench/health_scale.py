"""Active health checks at scale: meshgen's runtime vs HAProxy 2.6 on the same 10,000 endpoints.

Usage: ``python bench/health_scale.py [--endpoints 10000] [--services 1000] [--rounds 2]``.
Needs the Debian packages nginx-light and haproxy. nginx serves every endpoint (one port each,
200 for any path; one nginx per 2,500 ports) and logs the requests to every tenth port with
their time, port, connection and user agent (logs in /dev/shm, so no write waits for a disk).
The mesh has ``--services`` services of ``endpoints / services`` endpoints, each checked with
``http: {path: /healthz}`` every ``--interval`` (timeout 1 s, thresholds 2/3), and the default
route per service. Each round runs, one engine at a time, on the same endpoints:

* ``meshgen``: the runtime (``python DIST``) with the checks;
* ``meshgen, no checks``: the same mesh without ``health_check`` (the p99 baseline);
* ``haproxy``: HAProxy 2.6 on the same build's ``haproxy.cfg``.

Each engine gets ``--warmup`` seconds (connections opened, first interval passed), then a
``--measure`` window in which 100 requests/s (10 keep-alive clients, 10 req/s each, hosts
cycling over the services; latency counted from each request's scheduled time, so a stall is
not hidden) go through it. Reported per engine: healthy endpoints marked down (``is DOWN``
lines in its log, from its start), CPU in cores (from /proc, over the window), probes per
100 ms in the window (mean, min, max, worst deviation from the mean), and proxied p50/p99 and
non-200 answers. The load average is printed with each phase: other jobs share this machine,
and probes per 100 ms as nginx logs them include nginx's own scheduling delays on a busy one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from haproxy_harness import run_haproxy  # noqa: E402
from many_backends import Hit, many_port_nginx, raise_nofile, read_log  # noqa: E402
from runtime_harness import build_dist, run_dist, spec  # noqa: E402
from test_proxy_semantics import samples  # noqa: E402

from bench.proxy import cpu_seconds  # noqa: E402

MESHGEN_AGENT = "meshgen-health"
CLIENT_AGENT = "health-scale-bench"


def mesh(ports: list[int], services: int, interval: str, checks: bool) -> str:
    """``services`` services sharing ``ports`` as endpoints; default routes (host svc-N)."""
    per = len(ports) // services
    lines = ["services:"]
    for i in range(services):
        eps = ", ".join(f'{{address: "127.0.0.1:{p}"}}' for p in ports[i * per : (i + 1) * per])
        lines += [f"  svc-{i}:", f"    discovery: {{static: [{eps}]}}"]
        if checks:
            lines.append(f"    health_check: {{http: {{path: /healthz}}, interval: {interval}}}")
    return "\n".join(lines) + "\n"


@dataclass
class Phase:
    """What one engine did in one measurement window."""

    round: int
    engine: str
    marked_down: int
    cores: float
    probes: list[int]  # per 100 ms bucket
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    load: str

    def probe_row(self) -> str:
        if not self.probes:
            return "-"
        mean = statistics.fmean(self.probes)
        worst = max(abs(n - mean) for n in self.probes) / mean
        return f"{mean:.0f} ({min(self.probes)}..{max(self.probes)}, +-{100 * worst:.0f} %)"


def load(port: int, hosts: list[str], seconds: float, rate: int = 100) -> tuple[list[float], int]:
    """``rate`` requests/s for ``seconds`` over 10 keep-alive clients; (latencies s, failures).
    Latency runs from each request's scheduled time (no coordinated omission)."""
    clients = 10
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    start = time.monotonic() + 0.1

    def client(k: int) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        n = 0
        while True:
            due = start + (n * clients + k) / rate
            if due >= start + seconds:
                break
            if time.monotonic() > start + seconds + 5:  # stuck engine: the rest count as failed
                with lock:
                    failed[0] += 1
                n += 1
                continue
            time.sleep(max(0.0, due - time.monotonic()))
            host = hosts[(n * clients + k) % len(hosts)]
            try:
                conn.request("GET", "/", headers={"Host": host, "User-Agent": CLIENT_AGENT})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                conn.close()
                conn = HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            with lock:
                latencies.append(time.monotonic() - due)
                failed[0] += not ok
            n += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failed[0]


def probe_buckets(hits: list[Hit], t0: float, t1: float, agent: str) -> list[int]:
    """Health-check requests per 100 ms of [t0, t1) sent by ``agent`` (nginx logs every tenth
    port: the count is scaled by 10)."""
    counts = Counter(
        int((h.time - t0) * 10)
        for h in hits
        if h.uri == "/healthz" and h.agent == agent and t0 <= h.time < t1
    )
    return [10 * counts.get(i, 0) for i in range(int((t1 - t0) * 10))]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, folder: Path, ports: list[int]) -> None:
        self.args = args
        self.folder = folder
        self.hosts = [f"svc-{i}" for i in range(args.services)]
        self.offsets: dict[Path, int] = {}
        self.round = 0
        for name in ("checked", "unchecked"):
            (folder / name).mkdir()
        self.checked = build_dist(
            folder / "checked" / "dist",
            spec(mesh(ports, args.services, args.interval, checks=True)),
        )
        self.unchecked = build_dist(
            folder / "unchecked" / "dist",
            spec(mesh(ports, args.services, args.interval, checks=False)),
        )

    def window(self, engine: str, port: int, pid: int, log: Path, agent: str) -> Phase:
        """Warm up, then measure ``engine`` (listening on ``port``, process ``pid``)."""
        time.sleep(self.args.warmup)
        _, self.offsets = read_log(self.folder / "nginx", self.offsets)  # skip the warm-up
        load_text = f"load {os.getloadavg()[0]:.1f}"
        cpu0, w0, t0 = cpu_seconds(pid), time.monotonic(), time.time()
        latencies, failed = load(port, self.hosts, self.args.measure)
        cpu1, w1, t1 = cpu_seconds(pid), time.monotonic(), time.time()
        time.sleep(0.5)  # nginx flushes its log every 200 ms
        hits, self.offsets = read_log(self.folder / "nginx", self.offsets)
        down = log.read_text(errors="replace").count("is DOWN")
        return Phase(
            self.round,
            engine,
            down,
            (cpu1 - cpu0) / (w1 - w0),
            probe_buckets(hits, t0 + 0.5, t1 - 0.5, agent) if agent else [],
            1000 * percentile(latencies, 0.5),
            1000 * percentile(latencies, 0.99),
            len(latencies),
            failed,
            f"{load_text} -> {os.getloadavg()[0]:.1f}",
        )

    def meshgen(self, checked: bool) -> Phase:
        name = "meshgen" if checked else "meshgen, no checks"
        with run_dist(self.checked if checked else self.unchecked, timeout=120) as rt:
            phase = self.window(
                name, rt.port, rt.proc.pid, rt.log, MESHGEN_AGENT if checked else ""
            )
            if checked:
                values = [v for _, v in samples(rt, "meshgen_endpoint_healthy")]
                print(f"  meshgen endpoints healthy at the end: {sum(values):.0f}/{len(values)}")
        return phase

    def haproxy(self) -> Phase:
        with run_haproxy(self.checked) as ha:
            log = self.checked.parent / "haproxy.log"
            return self.window("haproxy 2.6", ha.port, ha.pid, log, "-")


def report(phases: list[Phase]) -> None:
    print(
        "| round | engine | marked down | CPU cores | probes / 100 ms: mean (min..max, worst) "
        "| p50 ms | p99 ms | non-200 / requests | machine load |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|---|")
    for p in phases:
        print(
            f"| {p.round} | {p.engine} | {p.marked_down} | {p.cores:.2f} | {p.probe_row()} "
            f"| {p.p50_ms:.2f} | {p.p99_ms:.2f} | {p.failed} / {p.requests} | {p.load} |"
        )
    by: dict[str, list[Phase]] = {}
    for p in phases:
        by.setdefault(p.engine, []).append(p)
    ratios = [
        c.p99_ms / u.p99_ms for c, u in zip(by["meshgen"], by["meshgen, no checks"], strict=True)
    ]
    print(f"p99 with checks / without, per round: {', '.join(f'{r:.2f}' for r in ratios)}")


@contextmanager
def endpoints(count: int, folder: Path) -> Iterator[list[int]]:
    raise_nofile(2 * count + 4096)  # the runtime: one probe connection per endpoint
    with many_port_nginx("nginx", folder / "nginx", count, sample=True) as ports:
        yield ports


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--endpoints", type=int, default=10_000)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--warmup", type=float, default=6.0)
    ap.add_argument("--measure", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-haproxy", action="store_true")
    args = ap.parse_args()
    phases: list[Phase] = []
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # logs never wait for a disk
    with (
        tempfile.TemporaryDirectory(prefix="meshgen-health-", dir=shm) as tmp,
        ExitStack() as stack,
    ):
        folder = Path(tmp)
        ports = stack.enter_context(endpoints(args.endpoints, folder))
        started = time.monotonic()
        bench = Bench(args, folder, ports)
        print(f"{len(ports)} endpoints, {args.services} services; built in "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
        for r in range(args.rounds):
            bench.round = r + 1
            runs: list[Callable[[], Phase]] = [
                lambda: bench.meshgen(True),
                lambda: bench.meshgen(False),
            ]
            if not args.skip_haproxy:
                runs.append(bench.haproxy)
            for run in runs if r % 2 == 0 else runs[::-1]:
                phase = run()
                phases.append(phase)
                print(f"round {r + 1}: {phase.engine}: down {phase.marked_down}, "
                      f"{phase.cores:.2f} cores, probes/100 ms {phase.probe_row()}, "
                      f"p99 {phase.p99_ms:.2f} ms, {phase.failed} failed, {phase.load}",
                      flush=True)  # fmt: skip
    report(phases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
