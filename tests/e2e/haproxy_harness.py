"""Run one mesh.yaml on both engines: the embedded runtime (``python DIST``) and HAProxy.

Theory of operation: the spec is compiled by the real pipeline and emitted as a real DIST. The
runtime binds its port-0 listeners itself and reports them in its ready file; HAProxy would
read the port of a port-0 listener from ``MESHGEN_PORT_<LISTENER>`` (docs/haproxy.md): the test
copy binds it to a socket listening on a port of its own instead (``bind fd@N``), bound here
once and inherited, so no port is guessed. A ``stats socket`` is added to ``global`` so tests
can read server states. For DNS discovery the generated ``resolvers`` sections read
``/etc/resolv.conf`` (``parse-resolv-conf``); ``nameserver=HOST:PORT`` swaps that line for
``nameserver dns1 HOST:PORT`` in the test copy, the counterpart of the runtime's
``--dns-server`` (the generated file holds no machine address).
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import require_binary, start_process
from polling import eventually
from runtime_harness import get_text, run_dist

from meshgen import emit, pipeline


def one_route(service: str) -> str:
    """The tail of a spec template (``{{``/``}}`` escaped for ``str.format``) with one route,
    ``SERVICE.test`` to ``service``, the listener ``edge`` and the admin on free ports."""
    return f"""\
routes:
  - name: {service}
    match: {{{{host: {service}.test}}}}
    to: [{{{{service: {service}}}}}]
listeners: [{{{{name: edge, address: "127.0.0.1:0"}}}}]
admin: "127.0.0.1:0"
"""


def build(spec: str, folder: Path) -> Path:
    """Compile ``spec`` (written as ``folder/mesh.yaml``) into ``folder/dist``; return DIST."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mesh.yaml").write_text(spec)
    result = pipeline.compile_spec(folder / "mesh.yaml")
    assert result.files is not None, [d.message for d in result.diagnostics]
    emit.emit(result.files, folder / "dist")
    return folder / "dist"


def check_config(
    cfg: Path, cwd: Path, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
) -> None:
    """``haproxy -dW -c -f cfg`` must exit 0 (any warning is an error)."""
    binary = require_binary("haproxy")
    proc = subprocess.run([binary, "-dW", "-c", "-f", str(cfg)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=30,
                          pass_fds=pass_fds)  # fmt: skip
    assert proc.returncode == 0, f"{cfg}:\n{proc.stdout}{proc.stderr}"


def _listening() -> socket.socket:
    """A socket listening on a port of its own (127.0.0.1:0), to hand to HAProxy."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s


def _bind_fd(text: str, name: str, sock: socket.socket) -> str:
    """The test copy binds ``name``'s port-0 address to an inherited listening socket."""
    placeholder = f'"127.0.0.1:${{MESHGEN_PORT_{name.upper().replace("-", "_")}}}"'
    assert placeholder in text, f"{name} is not a 127.0.0.1:0 address in haproxy.cfg"
    return text.replace(placeholder, f"fd@{sock.fileno()}")


@dataclass
class Engine:
    """One proxy under test, reachable on 127.0.0.1:``port``."""

    name: str
    port: int

    def request(self, path: str, host: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@dataclass
class HAProxy(Engine):
    """HAProxy with an admin ``stats socket`` at ``socket_path`` (``show stat`` etc.) and the
    port of every listener it was started with (``ports``)."""

    socket_path: Path
    pid: int
    ports: dict[str, int]


@contextmanager
def run_haproxy(dist: Path, listener: str = "edge", nameserver: str | None = None,
                others: tuple[str, ...] = ()) -> Iterator[HAProxy]:  # fmt: skip
    """Start ``haproxy -db`` on DIST's config from DIST's parent folder (relative cert paths);
    with ``nameserver`` every ``resolvers`` section asks that HOST:PORT instead of resolv.conf.
    Port-0 listeners ``others`` (besides ``listener``) get listening sockets too."""
    binary = require_binary("haproxy")
    root = dist.parent
    sock = root / "haproxy.sock"
    sock.unlink(missing_ok=True)
    text = (dist / "haproxy" / "haproxy.cfg").read_text()
    text = text.replace("\nglobal\n", f"\nglobal\n    stats socket {sock} level admin\n", 1)
    if nameserver is not None:
        assert "    parse-resolv-conf\n" in text, "no resolvers section to point at the nameserver"
        text = text.replace("    parse-resolv-conf\n", f"    nameserver dns1 {nameserver}\n")
    # Ports bound here, once, and handed over (``bind fd@N``): never a guess at a free port.
    bound = {name: _listening() for name in (listener, *others)}
    admin = _listening()
    for name, listening in bound.items():
        text = _bind_fd(text, name, listening)
    text = _bind_fd(text, "admin", admin)
    cfg = root / "haproxy-test.cfg"
    cfg.write_text(text)
    fds = tuple(sock.fileno() for sock in (*bound.values(), admin))
    try:
        check_config(cfg, root, pass_fds=fds)
        proc = start_process([binary, "-db", "-f", cfg], root / "haproxy.log", cwd=root,
                             pass_fds=fds)  # fmt: skip
        try:
            proc.wait_until(sock.exists, what="haproxy")  # its stats socket: it is serving
            ports = {name: s.getsockname()[1] for name, s in bound.items()}
            yield HAProxy("haproxy", ports[listener], sock, proc.pid, ports)
        finally:
            proc.stop()
    finally:
        for listening in (*bound.values(), admin):
            listening.close()


@dataclass
class RuntimeEngine(Engine):
    """The embedded runtime, with its admin server (``/metrics``)."""

    admin_address: str

    def admin(self, path: str) -> str:
        return get_text(self.admin_address, path)


@contextmanager
def run_runtime(dist: Path, *args: str, listener: str = "edge") -> Iterator[RuntimeEngine]:
    """Start ``python DIST *args`` (e.g. ``--dns-server HOST:PORT``) on its port-0 listeners."""
    with run_dist(dist, *args) as rt:
        address = str(rt.ready["listeners"][listener])  # type: ignore[index]
        yield RuntimeEngine("runtime", int(address.rsplit(":", 1)[1]), str(rt.ready["admin"]))


poll = eventually  # the parity tests' name for it
