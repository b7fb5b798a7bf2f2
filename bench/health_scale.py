"""Active health checks at scale: meshgen's runtime vs HAProxy 2.6 on the same 10,000 endpoints.

Usage: ``python bench/health_scale.py [--endpoints 10000] [--services 1000] [--rounds 2]``.
Needs the Debian packages nginx-light, haproxy and tcpdump. nginx serves every endpoint (one
port each, 200 for any path; one nginx per 2,500 ports, no access log). Probes are counted on
the wire: ``tcpdump`` on the loopback keeps, with its kernel timestamp, every packet that
starts a ``GET /healthz`` towards an endpoint port (a kernel filter, so a busy machine delays
nobody's clock but the sender's own).
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
non-200 answers. The load average is printed with each phase: other jobs share this machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import struct
import subprocess
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
from many_backends import many_port_nginx, raise_nofile  # noqa: E402
from runtime_harness import build_dist, run_dist, spec  # noqa: E402
from test_proxy_semantics import samples  # noqa: E402

from bench.proxy import cpu_seconds  # noqa: E402

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


@contextmanager
def wire_capture(path: Path, ports: list[int]) -> Iterator[Path]:
    """tcpdump on the loopback: packets to ``ports`` whose TCP payload starts ``GET /hea``
    (health probes; proxied requests are ``GET /``), kernel-timestamped, into ``path``."""
    payload = "((tcp[12:1] & 0xf0) >> 2)"
    bpf = (f"tcp dst portrange {min(ports)}-{max(ports)} and tcp[{payload}:4] = 0x47455420 "
           f"and tcp[{payload} + 4:4] = 0x2f686561")  # fmt: skip
    cmd = ["tcpdump", "-i", "lo", "-n", "-s", "80", "-B", "16384", "-U", "-w", str(path), bpf]
    with open(path.with_suffix(".log"), "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in path.with_suffix(".log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(path.with_suffix(".log").read_text())
            time.sleep(0.05)
        yield path
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def pcap_times(path: Path, start: int = 0) -> tuple[list[float], int]:
    """Kernel timestamps (Unix seconds) of the packets in pcap file ``path`` from byte
    ``start`` on (0: the file's start), and the offset after the last whole record."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    pos, out = max(start, 24), []
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, pos)
        if pos + 16 + incl > len(data):
            break
        out.append(sec + frac * scale)
        pos += 16 + incl
    return out, pos


def probe_buckets(times: list[float], t0: float, t1: float) -> list[int]:
    """Probes per 100 ms of [t0, t1)."""
    counts = Counter(int((t - t0) * 10) for t in times if t0 <= t < t1)
    return [counts.get(i, 0) for i in range(int((t1 - t0) * 10))]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Bench:
    def __init__(
        self, args: argparse.Namespace, folder: Path, ports: list[int], capture: Path
    ) -> None:
        self.args = args
        self.folder = folder
        self.capture = capture
        self.hosts = [f"svc-{i}" for i in range(args.services)]
        self.offset = 0
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

    def window(self, engine: str, port: int, pid: int, log: Path, probing: bool) -> Phase:
        """Warm up, then measure ``engine`` (listening on ``port``, process ``pid``)."""
        time.sleep(self.args.warmup)
        _, self.offset = pcap_times(self.capture, self.offset)  # skip the warm-up
        load_text = f"load {os.getloadavg()[0]:.1f}"
        cpu0, w0, t0 = cpu_seconds(pid), time.monotonic(), time.time()
        latencies, failed = load(port, self.hosts, self.args.measure)
        cpu1, w1, t1 = cpu_seconds(pid), time.monotonic(), time.time()
        time.sleep(0.5)  # tcpdump writes each packet at once (-U)
        times, self.offset = pcap_times(self.capture, self.offset)
        down = log.read_text(errors="replace").count("is DOWN")
        return Phase(
            self.round,
            engine,
            down,
            (cpu1 - cpu0) / (w1 - w0),
            probe_buckets(times, t0 + 0.5, t1 - 0.5) if probing else [],
            1000 * percentile(latencies, 0.5),
            1000 * percentile(latencies, 0.99),
            len(latencies),
            failed,
            f"{load_text} -> {os.getloadavg()[0]:.1f}",
        )

    def meshgen(self, checked: bool) -> Phase:
        name = "meshgen" if checked else "meshgen, no checks"
        with run_dist(self.checked if checked else self.unchecked, timeout=120) as rt:
            phase = self.window(name, rt.port, rt.proc.pid, rt.log, checked)
            if checked:
                values = [v for _, v in samples(rt, "meshgen_endpoint_healthy")]
                print(f"  meshgen endpoints healthy at the end: {sum(values):.0f}/{len(values)}")
        return phase

    def haproxy(self) -> Phase:
        with run_haproxy(self.checked) as ha:
            log = self.checked.parent / "haproxy.log"
            return self.window("haproxy 2.6", ha.port, ha.pid, log, True)


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
    with many_port_nginx("nginx", folder / "nginx", count, log=False) as ports:
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
    ap.add_argument("--nice", type=int, default=0,
                    help="added to the nice value of this script and its children (as root, "
                         "-10 puts every engine alike ahead of other jobs)")  # fmt: skip
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)
    phases: list[Phase] = []
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the capture never waits for a disk
    with (
        tempfile.TemporaryDirectory(prefix="meshgen-health-", dir=shm) as tmp,
        ExitStack() as stack,
    ):
        folder = Path(tmp)
        ports = stack.enter_context(endpoints(args.endpoints, folder))
        capture = stack.enter_context(wire_capture(folder / "probes.pcap", ports))
        started = time.monotonic()
        bench = Bench(args, folder, ports, capture)
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
