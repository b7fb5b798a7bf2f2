"""Build a DIST from hand-made tables and run ``python DIST`` on port-0 listeners.

The generated table files are exactly what ``meshgen build`` writes (``repr`` of the frozen
table types after a ``from meshgen_runtime.tables import ...``), plus a copy of the runtime and
the ``__main__.py`` of INTERFACES.md, so these tests exercise the real ``python DIST`` path.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import meshgen.runtime as runtime_pkg
from meshgen.runtime import tables as t

MAIN = """import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from meshgen_runtime.main import main
raise SystemExit(main(sys.argv[1:], dist=Path(__file__).resolve().parent))
"""
NAMES = ", ".join(n for n in dir(t) if n[:1].isupper() and not n.startswith("Literal"))


def _pdeathsig() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def write_dist(dist: Path, tables: t.Tables) -> Path:
    """Write DIST (tables + runtime copy + __main__.py); rewriting tables atomically per file."""
    (dist / "mesh").mkdir(parents=True, exist_ok=True)
    rt = dist / "meshgen_runtime"
    if not rt.exists():
        shutil.copytree(
            Path(runtime_pkg.__file__).parent, rt, ignore=shutil.ignore_patterns("__pycache__")
        )
        (dist / "__main__.py").write_text(MAIN)
    head = f"from meshgen_runtime.tables import {NAMES}\n"
    files = {
        "routing": {
            "MESH": tables.mesh,
            "CLUSTERS": tables.clusters,
            "ROUTES": tables.routes,
            "LISTENERS": tables.listeners,
        },
        "health": {
            "HEALTH_CHECKS": tables.health_checks,
            "OUTLIER_DETECTION": tables.outlier_detection,
        },
        "tls": {"CLIENT_TLS": tables.client_tls, "ACCESS": tables.access},
        "monitoring": {"ALERTS": tables.alerts, "SLOS": tables.slos},
    }
    for stem, values in files.items():
        body = head + "".join(f"{k} = {v!r}\n" for k, v in values.items())
        tmp = dist / "mesh" / f".{stem}.tmp"
        tmp.write_text(body)
        os.replace(tmp, dist / "mesh" / f"{stem}.py")
    return dist


def static(name: str, addresses: Sequence[str], **kw: object) -> t.Cluster:
    eps = tuple(t.Endpoint(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addresses)
    return t.Cluster(name=name, discovery=t.StaticDiscovery(eps), **kw)  # type: ignore[arg-type]


def target(
    service: str,
    weight: int = 100,
    retries: t.RetryPolicy | None = None,
    timeout: float = 5.0,
    subset: str | None = None,
) -> t.Target:
    return t.Target(service, subset, weight, timeout, 60.0, retries)


def mesh_tables(clusters: Sequence[t.Cluster], routes: Sequence[t.Route], **kw: object) -> t.Tables:
    """Tables with one listener ``edge`` on 127.0.0.1:0 serving every route, admin on port 0."""
    listener = t.Listener("edge", "127.0.0.1", 0, tuple(r.name for r in routes))
    return t.Tables(
        mesh=t.MeshInfo("shop", "mesh.test", admin_port=0),
        clusters=tuple(clusters),
        routes=tuple(routes),
        listeners=(listener,),
        **kw,  # type: ignore[arg-type]
    )


def with_routes(tables: t.Tables, routes: Sequence[t.Route]) -> t.Tables:
    lst = replace(tables.listeners[0], routes=tuple(r.name for r in routes))
    return replace(tables, routes=tuple(routes), listeners=(lst,))


class Runtime:
    """A running ``python DIST`` subprocess."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, ready: dict[str, object]) -> None:
        self.proc = proc
        self.log = log
        self.ready = ready
        edge = str(ready["listeners"]["edge"])  # type: ignore[index]
        host, port = edge.rsplit(":", 1)
        self.host, self.port = host, int(port)

    def request(
        self,
        method: str,
        path: str,
        host: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send raw bytes; return everything until the proxy closes (or timeout)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(data)
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except TimeoutError:
                pass
            return out

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def run_dist(dist: Path, *args: str, timeout: float = 15.0) -> Iterator[Runtime]:
    """Start ``python DIST --ready-file``; wait for the ready file; SIGTERM then SIGKILL at exit."""
    ready = dist.parent / f"{dist.name}.ready.json"
    ready.unlink(missing_ok=True)
    log = dist.parent / f"{dist.name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(dist), "--ready-file", str(ready), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runtime did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        yield Runtime(proc, log, json.loads(ready.read_text()))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


BACKEND = """
import http.server, os, sys, time
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def _reply(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        time.sleep(float(self.headers.get("x-delay", "0")))
        out = (name + " " + self.command + " " + self.path + "\\n").encode() + body
        self.send_response(int(self.headers.get("x-status", "200")))
        self.send_header("content-length", str(len(out)))
        self.send_header("x-backend", name)
        for k in ("x-forwarded-for", "via", "x-request-id", "traceparent", "host", "x-env"):
            if self.headers.get(k) is not None:
                self.send_header("echo-" + k, self.headers[k])
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = _reply
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


@contextmanager
def backend(name: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A killable subprocess HTTP backend; yields (address, process)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BACKEND, name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=_pdeathsig,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait()
