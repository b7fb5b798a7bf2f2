"""HTTP/2 clients through meshgen's runtime and HAProxy 2.6 (``proto h2`` on its bind), side by
side: requests/s and p99 with h2load, then a 1 GiB response streamed over HTTP/2.

Usage: ``python bench/h2.py [--duration 10] [--clients 16] [--streams 10] [--rounds 3]
[--stream-gib 1] [--backend http1|http2] [--runtime compiled|pure] [--libraries h2,jh2]``.
Needs the Debian packages nghttp2-client (h2load), haproxy, nginx-light and curl, and a C
compiler for the compiled runtime (built into the machine's cache first, as ``python DIST
--accelerate`` does).

The set-up is bench/proxy.py's ``stage()``: one nginx backend, HAProxy with a minimal config,
and a DIST the compiler builds from one mesh.yaml (host + path routing, a round-robin balancer,
retries, metrics). Both proxies are pinned to CPU 0, h2load, curl and nginx to CPU 1
(``taskset``): "one core" means one core. Each h2load client is one h2c connection (prior
knowledge) carrying up to ``--streams`` requests at once. ``--backend`` is what the proxies
speak to nginx: ``http1`` (the HTTP/2 streams become HTTP/1.1 requests) or ``http2`` (nginx
``listen ... http2``, HAProxy ``server ... proto h2``, the service ``protocol: http2``; h2c
to the endpoint). Both proxies stay up and are measured in alternating rounds, so load drift on
a shared machine hits both alike. Per run: h2load's req/s, p50/p99 from its per-request log
(``--log-file``) and the proxy's CPU time per request from /proc. ``--libraries h2,jh2`` runs
one meshgen runtime per HTTP/2 library in the same rounds (jh2 must be installed; the h2 one
gets a ``jh2`` on its PYTHONPATH that fails to import, so codec/h2lib.py falls back to h2);
which library each runtime really loaded is checked (/proc/PID/maps), never assumed.

The streams: ``curl --http2-prior-knowledge`` downloads ``--stream-gib`` GiB (a sparse file
nginx serves) and uploads as much (``curl -T``, a POST to bench/sink.py, which reads every
body whole and answers its length) through each proxy in alternating rounds, every byte
counted. meshgen's streams run in a runtime process of their own that served nothing before,
so its peak RSS (VmHWM) is the streams'; flow control is what should bound it
(docs/protocols.md). Then a slow reader (``curl --limit-rate``) on that process. Prints every
round, then the tables to paste into BENCHMARKS.md, with the load average before and after.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # polling

from polling import eventually
from proxy import HAPROXY_NAME, Run, cpu_seconds, listening, per_request, process, stage
from runtime_harness import Runtime, run_dist

from meshgen.resources import runtime_dir
from meshgen.runtime.accelerate import build

GIB = 1 << 30
SINK = Path(__file__).resolve().parent / "sink.py"
NGINX = """daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000; sendfile on;
  http2_max_requests 1000000; http2_max_concurrent_streams 1000;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port}%s;
    location = /big {{ root {d}; }}
    location / {{ return 200 "hello from nginx\\n"; }} }} }}
"""
HAPROXY = """global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  retries 2
frontend edge
  bind fd@{fd} proto h2
  use_backend sink if {{ path /sink }}
  default_backend web
backend web
  balance roundrobin
  http-reuse always
  server web1 127.0.0.1:{backend}%(server)s
backend sink
  server sink1 127.0.0.1:%(sink)d
"""
MESH = """
    services:
      web:
        protocol: %(protocol)s
        discovery: {{static: [{{address: "127.0.0.1:{port}"}}]}}
        load_balancer: {{policy: round_robin}}
        retries: {{attempts: 2, per_try_timeout: 5s}}
      sink:
        discovery: {{static: [{{address: "127.0.0.1:%(sink)d"}}]}}
    routes:
      - name: other
        match: {{host: other}}
        to: [{{service: web}}]
      - name: api
        match: {{host: shop, path_prefix: /api/, methods: [GET]}}
        to: [{{service: web}}]
      - name: big
        match: {{host: shop, path_exact: /big, methods: [GET]}}
        to: [{{service: web}}]
      - name: sink
        match: {{host: shop, path_exact: /sink, methods: [POST]}}
        to: [{{service: sink}}]
"""
BACKENDS = {"http1": ("", "", "http1"), "http2": (" http2", " proto h2", "http2")}
"""--backend: nginx's listen parameter, HAProxy's server parameter, the service's protocol."""


def curl(port: int, path: str, *extra: str, out: str = "/dev/null") -> str:
    """``curl --http2-prior-knowledge`` of ``path`` on ``port`` (Host shop), on CPU 1, the
    body written to ``out``; its -w."""
    cmd = ["taskset", "-c", "1", "curl", "-sS", "--http2-prior-knowledge", "-o", out,
           "-H", "host: shop", *extra, f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout


def answers_h2(port: int) -> bool:
    """``port`` answers an HTTP/2 request (h2c with prior knowledge) with 200."""
    return curl(port, "/api/items", "-w", "%{http_version} %{http_code}") == "2 200"


def h2load(port: int, args: argparse.Namespace, log: Path, pid: int) -> Run:
    """(req/s, p50 ms, p99 ms, CPU and kernel us/request of ``pid``) of one h2load run on CPU 1."""
    log.unlink(missing_ok=True)
    cmd = ["taskset", "-c", "1", "h2load", "-t1", f"-c{args.clients}", f"-m{args.streams}",
           f"-D{args.duration}", "--warm-up-time=1", f"--log-file={log}", "-H", ":authority: shop",
           f"http://127.0.0.1:{port}/api/items"]  # fmt: skip
    out = ""

    def run() -> int:
        nonlocal out
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return sum(1 for line in log.read_text().splitlines() if line.strip())

    cpu, kernel = per_request(pid, run)
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)[1])  # type: ignore[index]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert done is not None, out
    if done[1] != done[2] or "2xx" not in out or int(done[2]) == 0:
        print(f"  warning: not every request succeeded\n{out}", file=sys.stderr)
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    ms = sorted(int(f[2]) / 1000.0 for f in rows if f[1] == "200")  # microseconds -> ms
    if len(ms) != len(rows):
        other = collections.Counter(f[1] for f in rows if f[1] != "200")
        print(f"  warning: port {port}: {len(rows) - len(ms)} of {len(rows)} not 200: "
              f"{dict(other)}", file=sys.stderr)  # fmt: skip
    p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return rps, p50, p99, cpu, kernel


def transfer(
    port: int, pid: int, size: int, path: str, *extra: str, out: str = "/dev/null"
) -> tuple[float, float, list[str]]:
    """(MiB/s, CPU ms/MiB of ``pid``, [HTTP version, status, bytes downloaded]) of one curl
    request of ``path`` moving ``size`` bytes; ``extra``: curl options."""
    cpu0 = cpu_seconds(pid)
    fields = "%{http_version} %{http_code} %{size_download} %{time_total}"
    got = curl(port, path, *extra, "-w", fields, out=out).split()
    cpu = cpu_seconds(pid) - cpu0
    assert len(got) == 4 and got[0] == "2", f"{path} through port {port}: {got}"
    mib = size / (1 << 20)
    return mib / float(got[3]), 1e3 * cpu / mib, got[:3]


def download(port: int, size: int, pid: int, *extra: str) -> tuple[float, float]:
    """(MiB/s, CPU ms/MiB) of a download of the first ``size`` bytes of /big (a Range
    request), every byte counted."""
    rate, cpu, got = transfer(port, pid, size, "/big", "-r", f"0-{size - 1}", *extra)
    assert got[1:] == ["206", str(size)], f"download through port {port}: {got}"
    return rate, cpu


def upload(port: int, big: Path, pid: int) -> tuple[float, float]:
    """(MiB/s, CPU ms/MiB) of a POST of file ``big`` to /sink, which answers how many body
    bytes reached it (checked)."""
    size, answer = big.stat().st_size, big.with_name("sunk")
    rate, cpu, got = transfer(port, pid, size, "/sink", "-T", str(big), "-X", "POST",
                              out=str(answer))  # fmt: skip
    assert got[1] == "200" and answer.read_text() == f"{size}\n", f"upload via {port}: {got}"
    return rate, cpu


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB: now and the peak of its life."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def pin(pid: int) -> None:
    subprocess.run(["taskset", "-acp", "0", str(pid)], check=True, capture_output=True)


def installed_library() -> str:
    """The HTTP/2 library codec/h2lib.py picks in this Python: jh2 when importable."""
    return "jh2" if importlib.util.find_spec("jh2") is not None else "h2"


def loaded_library(pid: int) -> str:
    """The HTTP/2 library process ``pid`` runs on: jh2 if its compiled core is mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "jh2" if re.search(r"/jh2/_hazmat[^/\n]*\.so$", maps, re.M) else "h2"


@contextlib.contextmanager
def runtime(dist: Path, kind: str, library: str, folder: Path) -> Iterator[Runtime]:
    """``python DIST`` (``kind``: compiled or pure) pinned to CPU 0, on HTTP/2 ``library``:
    for h2 where jh2 is installed, a ``jh2`` package whose import fails comes first on its
    PYTHONPATH (run_dist passes this process's environment on when it starts it)."""
    with contextlib.ExitStack() as stack:
        saved = os.environ.get("PYTHONPATH")
        if library == "h2" and installed_library() == "jh2":
            shadow = folder / "no-jh2"
            (shadow / "jh2").mkdir(parents=True, exist_ok=True)
            (shadow / "jh2" / "__init__.py").write_text("raise ImportError('hidden')\n")
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow), saved]))
        try:
            rt = stack.enter_context(run_dist(dist, runtime=kind))
        finally:
            os.environ.pop("PYTHONPATH", None)
            if saved is not None:
                os.environ["PYTHONPATH"] = saved
        pin(rt.proc.pid)
        yield rt


def check_library(rt: Runtime, library: str) -> None:
    if loaded_library(rt.proc.pid) != library:
        raise SystemExit(f"the runtime on port {rt.port} loaded {loaded_library(rt.proc.pid)}, "
                         f"not {library}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16, help="HTTP/2 connections")
    ap.add_argument("--streams", type=int, default=10, help="concurrent streams per connection")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each proxy")
    ap.add_argument("--stream-gib", type=float, default=1.0, help="0: no stream")
    ap.add_argument("--stream-rounds", type=int, default=3)
    ap.add_argument("--slow-mib", type=int, default=256, help="MiB to the slow reader")
    ap.add_argument("--slow-rate", type=int, default=32, help="the slow reader's MiB/s")
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="http1")
    ap.add_argument("--runtime", choices=["compiled", "pure"], default="compiled")
    ap.add_argument("--libraries", default=installed_library(),
                    help="meshgen's HTTP/2 libraries, side by side: h2, jh2 or h2,jh2")  # fmt: skip
    args = ap.parse_args()
    libraries = args.libraries.split(",")
    if not set(libraries) <= {"h2", installed_library()}:
        raise SystemExit(f"--libraries {args.libraries}: jh2 is not installed (pip install jh2)")
    if args.runtime == "compiled":
        print(f"compiled runtime: {build(runtime_dir())}", flush=True)
    names = {lib: f"meshgen {args.runtime}, {lib}" for lib in libraries}
    listen, server, protocol = BACKENDS[args.backend]
    size = int(args.stream_gib * GIB)
    results: dict[str, Run] = {}
    rounds: list[dict[str, Run]] = []
    # per proxy and round: download MiB/s, CPU ms/MiB, upload MiB/s, CPU ms/MiB
    streams: dict[str, list[tuple[float, ...]]] = {HAPROXY_NAME: []}
    streams.update({name: [] for name in names.values()})
    memory: dict[str, tuple[float, float, float, float, float]] = {}  # idle, peak, slow...
    print(f"load average before: {os.getloadavg()}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="meshgen-bench-h2-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        d = Path(tmp)
        sink_sock = listening()
        sink = int(sink_sock.getsockname()[1])
        staged = stage(
            d,
            NGINX % listen,
            HAPROXY % {"server": server, "sink": sink},
            MESH % {"protocol": protocol, "sink": sink},
        )
        big = d / "big"
        with open(big, "wb") as sparse:  # zeros that never touch the disk
            sparse.truncate(size)
        nginx_cmd = ["taskset", "-c", "1", "nginx", "-c", str(d / "nginx.conf")]
        ha_cmd = ["taskset", "-c", "0", "haproxy", "-db", "-f", str(d / "haproxy.cfg")]
        stack.enter_context(
            process(nginx_cmd, d / "nginx.log", staged.nginx_sock, staged.nginx_env())
        )
        ha = stack.enter_context(process(ha_cmd, d / "ha.log", staged.haproxy_sock))
        sink_cmd = ["taskset", "-c", "1", sys.executable, str(SINK), str(sink_sock.fileno())]
        stack.enter_context(process(sink_cmd, d / "sink.log", sink_sock))
        ha_port = staged.haproxy_port
        eventually(lambda: answers_h2(ha_port), what="haproxy answering HTTP/2")
        proxies = [(HAPROXY_NAME, ha_port, ha.pid)]
        fresh: dict[str, Runtime] = {}  # per library: a runtime only the streams use
        for lib in libraries:
            rt = stack.enter_context(runtime(staged.dist, args.runtime, lib, d))
            fresh[lib] = stack.enter_context(runtime(staged.dist, args.runtime, lib, d))
            eventually(lambda rt=rt: answers_h2(rt.port), what="meshgen answering HTTP/2 "
                       f"(--backend {args.backend}: does this runtime speak it upstream?)",
                       context=lambda rt=rt: rt.log.read_text()[-2000:])  # fmt: skip
            check_library(rt, lib)
            proxies.append((names[lib], rt.port, rt.proc.pid))
        for n in range(args.rounds):  # interleaved: load drift hits all alike
            got = {name: h2load(port, args, d / "h2load.log", pid) for name, port, pid in proxies}
            for name, run in got.items():
                if name not in results or run[0] > results[name][0]:
                    results[name] = run
            rounds.append(got)
            shown = [f"{name} {r[0]:.0f} req/s p99 {r[2]:.2f} ms {r[3]:.1f} us CPU/req"
                     for name, r in got.items()]  # fmt: skip
            print(f"round {n + 1}: " + " | ".join(shown), flush=True)
        if size:
            idle = {lib: peak_rss_mib(rt.proc.pid)[0] for lib, rt in fresh.items()}
            engines = [(HAPROXY_NAME, ha_port, ha.pid)]
            engines += [(names[lib], rt.port, rt.proc.pid) for lib, rt in fresh.items()]
            for n in range(args.stream_rounds):
                shown = []
                for name, port, pid in engines:
                    down = download(port, size, pid)
                    down_peak = peak_rss_mib(pid)[1]
                    up = upload(port, big, pid)
                    streams[name].append((*down, *up))
                    shown.append(f"{name} down {down[0]:.0f} MiB/s {down[1]:.2f} ms CPU/MiB "
                                 f"(peak {down_peak:.0f} MiB), up {up[0]:.0f} MiB/s {up[1]:.2f} "
                                 f"ms CPU/MiB (peak {peak_rss_mib(pid)[1]:.0f} MiB)")  # fmt: skip
                print(f"stream round {n + 1}: " + " | ".join(shown), flush=True)
            for lib, rt in fresh.items():
                check_library(rt, lib)
                peak = peak_rss_mib(rt.proc.pid)[1]
                slow = download(rt.port, args.slow_mib << 20, rt.proc.pid, "--limit-rate",
                                f"{args.slow_rate}M")  # fmt: skip
                rss, slow_peak = peak_rss_mib(rt.proc.pid)
                memory[names[lib]] = (idle[lib], peak, slow[0], slow_peak, rss)
            memory[HAPROXY_NAME] = (0.0, peak_rss_mib(ha.pid)[1], 0.0, 0.0, 0.0)
    print(f"load average after: {os.getloadavg()}")
    print(
        f"h2load {args.duration}s, {args.clients} connections x {args.streams} streams, h2c to "
        f"the proxy, {args.backend} to nginx, proxies on 1 core (taskset), best run of each "
        f"over {args.rounds} interleaved rounds"
    )
    reference = results[HAPROXY_NAME]
    print(f"| {'setup':<26} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} "
          f"| {'CPU us/req':>10} | {'vs HAProxy':>10} |")  # fmt: skip
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 12}|{'-' * 12}|")
    for name, (rps, p50, p99, cpu, _) in results.items():
        print(f"| {name:<26} | {rps:>9.0f} | {p50:>7.2f} | {p99:>7.2f} | {cpu:>10.1f} "
              f"| {rps / reference[0]:>9.2f}x |")  # fmt: skip
    for name in names.values():
        ratios = [r[name][0] / r[HAPROXY_NAME][0] for r in rounds]
        p99s = [r[name][2] / r[HAPROXY_NAME][2] for r in rounds]
        cpus = [r[name][3] / r[HAPROXY_NAME][3] for r in rounds]
        print(
            f"{name}: round ratios {', '.join(f'{x:.2f}x' for x in ratios)} (median "
            f"{statistics.median(ratios):.2f}x of HAProxy's req/s); p99 median "
            f"{statistics.median(p99s):.2f}x; CPU per request median {statistics.median(cpus):.2f}x"
        )
    if size:
        print(f"{args.stream_gib:g} GiB down (curl from nginx) and up (curl -T to a sink) over "
              f"HTTP/2 (h2c), {args.backend} to nginx, medians of {args.stream_rounds} "
              "interleaved rounds")  # fmt: skip
        print(f"| {'setup':<26} | {'down MiB/s':>10} | {'CPU ms/MiB':>10} | {'up MiB/s':>8} "
              f"| {'CPU ms/MiB':>10} | {'peak RSS MiB':>12} |")  # fmt: skip
        print(f"|{'-' * 28}|{'-' * 12}|{'-' * 12}|{'-' * 10}|{'-' * 12}|{'-' * 14}|")
        for name, runs in streams.items():
            down, down_cpu, up, up_cpu = (statistics.median(c) for c in zip(*runs, strict=True))
            print(f"| {name:<26} | {down:>10.0f} | {down_cpu:>10.2f} | {up:>8.0f} "
                  f"| {up_cpu:>10.2f} | {memory[name][1]:>12.0f} |")  # fmt: skip
        print("(HAProxy's peak RSS covers its h2load runs too; each meshgen row is a runtime that "
              "served only these streams)")  # fmt: skip
        for name in names.values():
            idle_mib, peak, slow_rate, slow_peak, rss = memory[name]
            print(f"{name}: RSS {idle_mib:.0f} MiB idle before the streams, peak {peak:.0f} MiB "
                  f"after them; then a slow reader (curl --limit-rate {args.slow_rate}M, "
                  f"{args.slow_mib} MiB): {slow_rate:.0f} MiB/s, peak {slow_peak:.0f} MiB, "
                  f"RSS {rss:.0f} MiB after")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
