"""Build a DIST with the real compiler and run ``python DIST`` on port-0 listeners.

:func:`build_dist` compiles mesh.yaml text exactly as ``meshgen build`` does (every stage,
every target, MANIFEST.json, atomic emit). :func:`write_dist` renders already-built tables
with the same python target (for tests that construct tables the YAML cannot express).
:data:`HEAD` is the usual top of a test spec: mesh ``shop``, listener ``edge`` and the admin
server on port 0, which the ready file reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from polling import eventually

from meshgen import __version__, diagnostics, pipeline, targets
from meshgen.emit import MANIFEST, emit, manifest_text
from meshgen.runtime.tables import Tables
from meshgen.targets import python as python_target

HEAD = """\
version: 1
mesh: {name: shop, domain: mesh.test}
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: "127.0.0.1:0"
"""


def _pdeathsig() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _limited(nofile: tuple[int, int]) -> None:
    """In the child before exec: the parent-death signal and the open-files limit."""
    _pdeathsig()
    resource.setrlimit(resource.RLIMIT_NOFILE, nofile)


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def memory(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (or ``VmHWM``, the peak) of process ``pid`` in bytes."""
    found = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found is not None, f"no {field} for {pid}"
    return int(found[1]) * 1024


def read_response(s: socket.socket) -> bytes:
    """One whole response with a Content-Length from socket ``s`` (head and body), and not a
    byte more: a response pipelined behind it stays in the socket for the next call."""
    out = b""
    while not out.endswith(b"\r\n\r\n"):
        byte = s.recv(1)  # the head byte by byte: a bigger read could take the next response
        if not byte:
            raise ConnectionError(f"closed after {out!r}")
        out += byte
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", out)
    assert found is not None, out
    end = len(out) + int(found[1])
    while len(out) < end:
        chunk = s.recv(min(65536, end - len(out)))
        if not chunk:
            raise ConnectionError(f"closed after {out!r}")
        out += chunk
    return out


def converse(
    port: int, data: bytes, quiet: float = 5.0, limit: int = 1 << 30, host: str = "127.0.0.1"
) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection; return what came back until the proxy closed it
    (True) or nothing came for ``quiet`` seconds or ``limit`` bytes came (False). A reset
    counts as closed (a proxy that closes with unread bytes sends one)."""
    with socket.create_connection((host, port), timeout=quiet) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        out = b""
        try:
            while len(out) < limit:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            return out, True
        return out, False


def spec(body: str) -> str:
    """:data:`HEAD` followed by ``body`` (services, routes, ...), dedented."""
    return HEAD + textwrap.dedent(body)


def compile_spec(text: str, path: Path) -> pipeline.Result:
    """Write ``text`` to ``path`` and compile it; fail with the rendered diagnostics on error."""
    path.write_text(text)
    result = pipeline.compile_spec(path)
    if result.files is None or result.tables is None:
        shown = diagnostics.render_text(result.diagnostics, {str(path): text})
        raise AssertionError(f"{path} does not compile:\n{shown}")
    return result


def build_dist(dist: Path, text: str) -> Path:
    """``meshgen build`` of mesh.yaml ``text`` (saved next to DIST) into ``dist``; atomic."""
    result = compile_spec(text, dist.parent / "mesh.yaml")
    assert result.files is not None
    emit(result.files, dist)
    return dist


def compile_tables(text: str, folder: Path) -> Tables:
    """The tables the compiler makes of ``text`` (for the in-process client)."""
    result = compile_spec(text, folder / "mesh.yaml")
    assert result.tables is not None
    return result.tables


def write_dist(dist: Path, tables: Tables) -> Path:
    """Render ``tables`` with the python target (tables, ``__main__.py``, runtime) into DIST."""
    files = python_target.render(tables, targets.make_context("mesh.yaml", __version__))
    files[MANIFEST] = manifest_text(files, "mesh.yaml", b"", __version__)
    emit(files, dist)
    return dist


def get_text(address: str, path: str, timeout: float = 5.0) -> str:
    """GET ``path`` from HOST:PORT ``address`` (an admin server); the body as text."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


class Runtime:
    """A running ``python DIST`` subprocess."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, ready: dict[str, object]) -> None:
        self.proc = proc
        self.log = log
        self.ready = ready
        edge = str(ready["listeners"].get("edge", "127.0.0.1:0"))  # type: ignore[attr-defined]
        host, port = edge.rsplit(":", 1)  # (a mesh with tcp listeners only has no edge)
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
        return self.converse(data, timeout)[0]

    def converse(self, data: bytes, quiet: float = 5.0, limit: int = 1 << 30) -> tuple[bytes, bool]:
        """:func:`converse` with this runtime's listener."""
        return converse(self.port, data, quiet, limit, self.host)

    def admin(self, path: str) -> str:
        """GET ``path`` from the admin server (``/metrics``, ``/config``...); the body as text."""
        return get_text(str(self.ready["admin"]), path)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def check_runtime_kind(running: str, wanted: str) -> None:
    """The runtime that started is the one asked for (``MESHGEN_RUNTIME``, which
    tests/e2e/conftest.py sets): a compiled build that silently fell back fails here."""
    if wanted == "compiled":
        assert running.startswith("compiled (mypyc, "), f"asked for compiled, runs {running}"
    elif wanted == "pure":
        assert running == "pure", f"asked for pure, runs {running}"


@contextmanager
def run_dist(
    dist: Path,
    *args: str,
    timeout: float = 15.0,
    cli: bool = False,
    nofile: tuple[int, int] | None = None,
    runtime: str | None = None,
) -> Iterator[Runtime]:
    """Start ``python DIST --ready-file`` (``meshgen run DIST`` with ``cli``; with ``nofile``
    (soft, hard) as its RLIMIT_NOFILE; ``runtime``: its ``MESHGEN_RUNTIME``, else this
    process's); wait for the ready file; SIGTERM then SIGKILL at exit."""
    wanted = runtime or os.environ.get("MESHGEN_RUNTIME", "auto")
    ready = dist.parent / f"{dist.name}.ready.json"
    ready.unlink(missing_ok=True)
    log = dist.parent / f"{dist.name}.log"
    command = [sys.executable, "-m", "meshgen", "run"] if cli else [sys.executable]
    command.append(str(dist))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "--ready-file", str(ready), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig if nofile is None else lambda: _limited(nofile),
            env={**os.environ, "MESHGEN_RUNTIME": wanted},
        )
    try:

        def started() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"runtime exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            return ready.exists()

        eventually(started, timeout=timeout, what="the runtime's ready file",
                   context=lambda: log.read_text()[-3000:])  # fmt: skip
        info = json.loads(ready.read_text())
        check_runtime_kind(str(info.get("runtime")), wanted)
        yield Runtime(proc, log, info)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


SERVE_HANDLER = """
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""
"""Tail of a :func:`script_backend` script: serve its handler class ``H`` on a free port and
print the port first."""

BACKEND = (
    """
import http.server, os, sys, time
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def _reply(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.headers.get("x-arrived"):  # tell the test the request is here (a file)
            open(self.headers["x-arrived"], "w").close()
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
"""
    + SERVE_HANDLER
)


@contextmanager
def script_backend(source: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``python -c source *args``, a server that prints its port on its first line; yields
    (address, process) and kills the process (by PID) on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-c", source, *args],
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


def backend(name: str) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    """A killable subprocess HTTP backend answering with its ``name``; yields (address, process)."""
    return script_backend(BACKEND, name)


HOSTILE = Path(__file__).with_name("hostile_backend.py").read_text()


@contextmanager
def hostile_proxy(
    folder: Path, timeout: str, idle_timeout: str, limits: str | None = None
) -> Iterator[Runtime]:
    """``python DIST`` in front of ``hostile_backend.py``: service and host ``hostile``, with
    the route ``timeout`` and ``idle_timeout`` given (mesh.yaml durations), and the listener's
    ``limits`` (a YAML flow mapping) when given."""
    with script_backend(HOSTILE) as (address, _):
        text = spec(
            f"""
            services:
              hostile:
                discovery: {{static: [{{address: "{address}"}}]}}
                timeout: {timeout}
                idle_timeout: {idle_timeout}
            routes:
              - {{name: hostile, match: {{host: hostile}}, to: [{{service: hostile}}]}}
            """
        )
        if limits is not None:
            listener = 'address: "127.0.0.1:0"}'
            text = text.replace(listener, f'address: "127.0.0.1:0", limits: {limits}}}', 1)
        with run_dist(build_dist(folder / "dist", text)) as rt:
            yield rt
