"""Proxy throughput: wrk through meshgen's proxy vs HAProxy 2.6 (nbthread 1) to the same nginx.

Usage: ``python bench/proxy.py [--duration 10] [--connections 32]``. Needs the Debian packages
wrk, haproxy and nginx-light. Proxies are pinned to CPU 0 and wrk to CPU 1 (``taskset``), so
"one core" means one core. meshgen runs with routing (host + path match), a round-robin
balancer over the backend, retries and metrics on; the access log is off.
Both proxies stay up and are measured in alternating rounds (``--rounds``), so load drift on
a shared machine affects both alike. ``--baseline REF`` adds a third: the DIST that git commit
REF's compiler builds from the same mesh.yaml (so, that commit's runtime), in every round, for
a same-load A/B of a runtime change. Prints every round (req/s, p99, the CPU time each proxy
spent per request, read from /proc, and the round's ratio), then the table of the best run of
each with the median round ratio; paste it into BENCHMARKS.md. CPU per request is the number
least disturbed by other jobs on the machine: compare it when req/s swing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from polling import eventually  # noqa: E402
from runtime_harness import build_dist, run_dist, spec  # noqa: E402

NGINX = """daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello from nginx\\n"; }} }} }}
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
  bind 127.0.0.1:{port}
  default_backend web
backend web
  balance roundrobin
  http-reuse always
  server web1 127.0.0.1:{backend}
"""


MESH = """
    services:
      web:
        discovery: {{static: [{{address: "127.0.0.1:{port}"}}]}}
        load_balancer: {{policy: round_robin}}
        retries: {{attempts: 2, per_try_timeout: 5s}}
    routes:
      - name: other
        match: {{host: other}}
        to: [{{service: web}}]
      - name: api
        match: {{host: shop, path_prefix: /api/, methods: [GET]}}
        to: [{{service: web}}]
"""  # spec() body: mesh shop, listener edge and admin on port 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    def accepts() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    eventually(accepts, what=f"port {port} open")


@contextlib.contextmanager
def process(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Run = tuple[float, float, float, float]  # req/s, p50 ms, p99 ms, CPU us per request


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, host: str, duration: int, connections: int, pid: int | None = None) -> Run:
    """(req/s, p50 ms, p99 ms, CPU us/request of ``pid``) from ``wrk --latency`` on CPU 1."""
    cmd = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"Host: {host}",
        f"http://127.0.0.1:{port}/api/items",
    ]
    cpu0 = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu0 if pid is not None else 0.0
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m is not None, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"  warning: {errors.group(1)} non-2xx responses", file=sys.stderr)
    return rps, pct("50"), pct("99"), 1e6 * cpu / max(1, requests)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of both proxies")
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the DIST git commit REF builds (its runtime) in every round: an A/B",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshgen-bench-") as tmp:
        d = Path(tmp)
        nginx_port, haproxy_port = free_port(), free_port()
        (d / "nginx.conf").write_text(NGINX.format(d=d, port=nginx_port))
        (d / "haproxy.cfg").write_text(HAPROXY.format(port=haproxy_port, backend=nginx_port))
        dist = build_dist(d / "dist", spec(MESH.format(port=nginx_port)))
        base_dist = build_at(args.baseline, dist.parent / "mesh.yaml", d) if args.baseline else None
        env_cpu = ["taskset", "-c", "0"]
        results: dict[str, Run] = {}
        rounds: list[tuple[Run, Run]] = []
        ab: list[tuple[Run, Run]] = []  # (baseline, this tree) per round
        ha_name, mg_name = "haproxy 2.6 (nbthread 1)", "meshgen proxy"

        def keep(name: str, run: Run) -> None:
            if name not in results or run[0] > results[name][0]:
                results[name] = run

        nginx_cmd = ["taskset", "-c", "1", "nginx", "-c", str(d / "nginx.conf")]
        ha_cmd = [*env_cpu, "haproxy", "-db", "-f", str(d / "haproxy.cfg")]
        with process(nginx_cmd, d / "nginx.log"), process(ha_cmd, d / "ha.log") as ha:
            wait_port(nginx_port)
            wait_port(haproxy_port)
            keep("direct nginx", wrk(nginx_port, "shop", 3, args.connections))
            with run_dist(dist) as rt, contextlib.ExitStack() as stack:
                pinned = [rt]
                if base_dist is not None:
                    pinned.append(stack.enter_context(run_dist(base_dist)))
                for r in pinned:
                    subprocess.run(
                        ["taskset", "-acp", "0", str(r.proc.pid)], check=True, capture_output=True
                    )
                for n in range(args.rounds):  # interleaved: load drift hits both alike
                    h = wrk(haproxy_port, "shop", args.duration, args.connections, ha.pid)
                    m = wrk(rt.port, "shop", args.duration, args.connections, rt.proc.pid)
                    keep(ha_name, h)
                    keep(mg_name, m)
                    rounds.append((h, m))
                    print(
                        f"round {n + 1}: haproxy {h[0]:.0f} req/s p99 {h[2]:.2f} ms "
                        f"{h[3]:.1f} us CPU/req | meshgen {m[0]:.0f} req/s p99 {m[2]:.2f} ms "
                        f"{m[3]:.1f} us CPU/req | {m[0] / h[0]:.2f}x",
                        flush=True,
                    )
                    if base_dist is not None:
                        b = pinned[1]
                        m0 = wrk(b.port, "shop", args.duration, args.connections, b.proc.pid)
                        keep(f"meshgen at {args.baseline}", m0)
                        ab.append((m0, m))
                        print(
                            f"  baseline {args.baseline}: {m0[0]:.0f} req/s p99 {m0[2]:.2f} ms "
                            f"{m0[3]:.1f} us CPU/req | this tree {m[3]:.1f} us CPU/req",
                            flush=True,
                        )
    base = results[ha_name]
    print(
        f"wrk {args.duration}s, {args.connections} connections, proxies on 1 core (taskset), "
        f"best run of each over {args.rounds} interleaved rounds"
    )
    print(
        f"| {'setup':<26} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} "
        f"| {'CPU us/req':>10} | {'vs HAProxy':>10} |"
    )
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 12}|{'-' * 12}|")
    for name, (rps, p50, p99, cpu) in results.items():
        ratio = f"{rps / base[0]:.2f}x" if name != "direct nginx" else "-"
        cpu_text = f"{cpu:.1f}" if name != "direct nginx" else "-"
        print(
            f"| {name:<26} | {rps:>9.0f} | {p50:>7.2f} | {p99:>7.2f} | {cpu_text:>10} "
            f"| {ratio:>10} |"
        )
    ratios = [m[0] / h[0] for h, m in rounds]
    p99s = [m[2] / h[2] for h, m in rounds]
    print(
        f"round ratios {', '.join(f'{r:.2f}x' for r in ratios)} (median "
        f"{statistics.median(ratios):.2f}x); p99 meshgen/haproxy median "
        f"{statistics.median(p99s):.2f}; CPU per request haproxy/meshgen "
        f"{statistics.median(h[3] / m[3] for h, m in rounds):.2f}"
    )
    if ab:
        before, after = [b[3] for b, _ in ab], [a[3] for _, a in ab]
        print(
            f"same-load A/B, CPU us per request: {args.baseline} "
            f"{', '.join(f'{x:.1f}' for x in before)} (median {statistics.median(before):.1f}); "
            f"this tree {', '.join(f'{x:.1f}' for x in after)} "
            f"(median {statistics.median(after):.1f})"
        )
    return 0


def build_at(ref: str, mesh: Path, tmp: Path) -> Path:
    """``meshgen build`` of ``mesh`` by the compiler of git commit ``ref`` (so the DIST holds
    that commit's runtime): its sources extracted with ``git archive``, never checked out."""
    src = tmp / "baseline-src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "meshgen", "templates",
                              "schemas"], check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    dist = tmp / "dist-baseline"
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-m", "meshgen", "build", str(mesh), "-o", str(dist)],
                   env=env, cwd=tmp, check=True, capture_output=True)  # fmt: skip
    return dist


if __name__ == "__main__":
    raise SystemExit(main())
