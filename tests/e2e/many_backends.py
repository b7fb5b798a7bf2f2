"""Many real loopback backends at once: one nginx listening on N ports, logging every request.

Used by the health-check scale test and ``bench/health_scale.py``. nginx (Debian
``nginx-light``) answers every request 200 on each of N ports in one worker, with keep-alive
requests unlimited, and writes one access-log line per request: ``$msec $server_port
$connection $request_uri $http_user_agent``, so who sent what, when, and on which connection can
be counted afterwards (:func:`read_log`). Ports come from below the kernel's ephemeral range
(outgoing connections never take them), picked free at start.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime_harness import die_with_parent

NGINX = """daemon off; worker_processes 1; worker_rlimit_nofile {nofile};
pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections {connections}; }}
http {{
  log_format probe '$msec $server_port $connection $request_uri $http_user_agent';
  access_log {d}/access.log probe buffer=256k flush=200ms;
  keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{
{listens}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
FIRST_PORT = 12000


@dataclass(frozen=True)
class Hit:
    """One request nginx answered."""

    time: float
    port: int
    connection: int
    uri: str
    agent: str


def raise_nofile(limit: int) -> None:
    """Raise this process's descriptor limits to ``limit`` (children inherit them); as root
    the hard limit may rise too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < limit:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(hard, limit)))


def free_ports(count: int, first: int = FIRST_PORT) -> list[int]:
    """``count`` loopback ports from ``first`` up that nothing listens on now."""
    out: list[int] = []
    port = first
    while len(out) < count:
        if port >= 32768:
            raise RuntimeError(f"only {len(out)} free ports below the ephemeral range")
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                out.append(port)
            except OSError:
                pass
        port += 1
    return out


def read_log(folder: Path) -> list[Hit]:
    """Every request logged so far (nginx flushes its log buffer every 200 ms)."""
    hits: list[Hit] = []
    path = folder / "access.log"
    if not path.exists():
        return hits
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split(" ", 4)
        if len(parts) == 5:
            hits.append(Hit(float(parts[0]), int(parts[1]), int(parts[2]), parts[3], parts[4]))
    return hits


@contextlib.contextmanager
def many_port_nginx(nginx: str, folder: Path, count: int) -> Iterator[list[int]]:
    """Run nginx on ``count`` loopback ports (logs in ``folder``); yields the ports."""
    folder.mkdir(parents=True, exist_ok=True)
    ports = free_ports(count)
    listens = "\n".join(f"    listen 127.0.0.1:{p};" for p in ports)
    nofile = 4 * count + 4096
    raise_nofile(nofile)
    conf = NGINX.format(d=folder, listens=listens, nofile=nofile, connections=3 * count + 2048)
    (folder / "nginx.conf").write_text(conf)
    with open(folder / "nginx.out", "wb") as out:
        proc = subprocess.Popen(
            [nginx, "-c", str(folder / "nginx.conf")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", ports[-1]), 0.2),
            ):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start:\n" + (folder / "nginx.err").read_text())
            time.sleep(0.05)
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
