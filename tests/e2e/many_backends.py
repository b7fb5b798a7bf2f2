"""Many real loopback backends at once: nginx listening on N ports, logging every request.

Used by the health-check scale test and ``bench/health_scale.py``. nginx (Debian
``nginx-light``) answers every request 200 on each of N ports, with keep-alive requests
unlimited, and (unless told not to) writes one access-log line per request: ``$msec
$server_port $connection $request_uri $http_user_agent``, so who sent what, when, and on
which connection can be counted afterwards (:func:`read_log`). One nginx (one worker) serves
at most :data:`PORTS_PER_NGINX` ports: a worker holds a descriptor per listening port and per
connection, and a process may not raise its descriptor limit past the hard limit (20,000
here). The listening sockets are bound here (port 0) and handed to nginx, which takes
inherited sockets from its ``NGINX`` environment variable (its binary-upgrade mechanism): no
port is guessed free, and the harness holds them until nginx is gone.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import start_process

NGINX = """daemon off; worker_processes 1; worker_rlimit_nofile {nofile};
pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections {connections}; }}
http {{
  log_format probe '$msec $server_port $connection $request_uri $http_user_agent';
  access_log {access_log};
  keepalive_requests 100000000; keepalive_timeout 300s;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{
{listens}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
PORTS_PER_NGINX = 2500


@dataclass(frozen=True)
class Hit:
    """One request nginx answered."""

    time: float
    port: int
    connection: int
    uri: str
    agent: str


def raise_nofile(limit: int) -> None:
    """Raise this process's soft descriptor limit (children inherit it) to ``limit``, or to
    the hard limit where that is lower and cannot be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= limit:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(hard, limit)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))


def listening_sockets(count: int) -> list[socket.socket]:
    """``count`` sockets listening on 127.0.0.1, each on a port the kernel chose."""
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            out.append(s)
            s.bind(("127.0.0.1", 0))
            s.listen(511)
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def read_log(
    folder: Path, offsets: dict[Path, int] | None = None
) -> tuple[list[Hit], dict[Path, int]]:
    """The requests logged by every nginx under ``folder`` since ``offsets`` (byte offsets per
    log, from a previous call; nginx flushes its buffer every 200 ms), and the new offsets."""
    hits: list[Hit] = []
    seen = dict(offsets or {})
    for path in sorted(folder.glob("*/access.log")):
        start = seen.get(path, 0)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        end = data.rfind(b"\n") + 1
        seen[path] = start + end
        for line in data[:end].decode(errors="replace").splitlines():
            parts = line.split(" ", 4)
            if len(parts) == 5:
                t, port, conn, uri, agent = parts
                hits.append(Hit(float(t), int(port), int(conn), uri, agent))
    hits.sort(key=lambda h: h.time)
    return hits, seen


@contextlib.contextmanager
def nginx_on(nginx: str, folder: Path, socks: list[socket.socket], log: bool) -> Iterator[None]:
    """One nginx (one worker) serving the listening sockets ``socks``, its config (and with
    ``log`` its access log) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ports = [s.getsockname()[1] for s in socks]
    listens = "\n".join(f"    listen 127.0.0.1:{p};" for p in ports)
    n = len(ports)
    access_log = f"{folder}/access.log probe buffer=256k flush=200ms" if log else "off"
    conf = NGINX.format(d=folder, listens=listens, nofile=4 * n + 1024, connections=3 * n + 512,
                        access_log=access_log)  # fmt: skip
    (folder / "nginx.conf").write_text(conf)
    fds = [s.fileno() for s in socks]
    env = {**os.environ, "NGINX": "".join(f"{fd};" for fd in fds)}
    proc = start_process([nginx, "-c", folder / "nginx.conf"], folder / "nginx.out", env=env,
                         pass_fds=fds)  # fmt: skip

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", ports[-1]), 0.5) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return c.recv(16).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    try:
        proc.wait_until(answers, timeout=30, what="nginx answering")
        yield
    finally:
        proc.stop(10)


@contextlib.contextmanager
def many_port_nginx(nginx: str, folder: Path, count: int, log: bool = True) -> Iterator[list[int]]:
    """nginx on ``count`` loopback ports (one instance per :data:`PORTS_PER_NGINX`, logs in
    ``folder/<i>/``); yields the ports. Without ``log`` nginx writes no access log (less work
    for it at 10,000 ports)."""
    raise_nofile(count + 4 * min(count, PORTS_PER_NGINX) + 1024)
    socks = listening_sockets(count)
    try:
        with contextlib.ExitStack() as stack:
            for i in range(0, count, PORTS_PER_NGINX):
                where = folder / str(i // PORTS_PER_NGINX)
                stack.enter_context(nginx_on(nginx, where, socks[i : i + PORTS_PER_NGINX], log))
            yield [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
