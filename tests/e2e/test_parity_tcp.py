"""tcp listeners on the three engines: the embedded runtime, HAProxy (``mode tcp``) and Envoy
(``tcp_proxy``) forward the same bytes from one mesh.yaml.

Scenarios per engine: a tcp echo with the endpoint speaking first, a half-close answered after
the client's FIN, 4 MiB each way, a weighted split over two services, a killed endpoint
leaving rotation (tcp health check), and SNI passthrough to ``openssl s_server`` pairs (a
wildcard at depth two, an unknown name closed).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme
from engines import ENGINES, run_engine
from haproxy_harness import Engine, build, poll
from tcp_harness import echo, exact, line
from test_tcp_tls import NAMES, s_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MIB = 1 << 20

ECHO_SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  one:
    protocol: tcp
    discovery: {{static: [{{address: "{a}"}}, {{address: "{b}"}}]}}
    health_check: {{tcp: {{}}, interval: 200ms, timeout: 500ms, unhealthy_threshold: 1}}
  two:
    protocol: tcp
    discovery: {{static: [{{address: "{c}"}}]}}
listeners:
  - name: db
    address: "127.0.0.1:0"
    protocol: tcp
    to: [{{service: one, weight: 50}}, {{service: two, weight: 50}}]
admin: 127.0.0.1:0
"""

SNI_SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  api: {{protocol: tcp, discovery: {{static: [{{address: "{api}"}}]}}}}
  internal: {{protocol: tcp, discovery: {{static: [{{address: "{internal}"}}]}}}}
listeners:
  - name: pass
    address: "127.0.0.1:0"
    protocol: tcp
    sni: {{api.example.com: api, "*.internal.test": internal}}
admin: 127.0.0.1:0
"""


def _connect(e: Engine) -> socket.socket:
    return socket.create_connection(("127.0.0.1", e.port), timeout=15)


def _greeting(e: Engine) -> bytes:
    """The endpoint's name, or b"" when the connection was closed (a dead endpoint picked)."""
    with _connect(e) as s:
        try:
            return line(s)
        except ConnectionError:
            return b""


@pytest.mark.parametrize("name", ENGINES)
def test_tcp_echo_parity(name: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        procs = {n: stack.enter_context(echo(n)) for n in ("a", "b", "c")}
        spec = ECHO_SPEC.format(**{n: addr for n, (addr, _) in procs.items()})
        e = stack.enter_context(run_engine(name, build(spec, tmp_path / "mesh"), listener="db"))
        poll(lambda: {_greeting(e) for _ in range(30)} == {b"a\n", b"b\n", b"c\n"}, what=name)

        with _connect(e) as s:  # half-close: the answer comes after our FIN
            line(s)
            s.sendall(b"hello")
            s.shutdown(socket.SHUT_WR)
            assert exact(s, 5) == b"hello" and line(s) == b"bye 5\n"
            assert s.recv(1) == b""

        block = random.Random(3).randbytes(MIB)
        with _connect(e) as s:  # 4 MiB each way at once
            line(s)
            sender = threading.Thread(target=lambda: [s.sendall(block) for _ in range(4)])
            sender.start()
            got = hashlib.sha256()
            for _ in range(4):
                got.update(exact(s, MIB))
            sender.join(15)
            assert got.digest() == hashlib.sha256(block * 4).digest()

        split = [_greeting(e) for _ in range(60)]  # 50/50 over services; one = a + b
        assert 10 < split.count(b"c\n") < 50, split.count(b"c\n")

        procs["b"][1].kill()
        procs["b"][1].wait()
        poll(lambda: {_greeting(e) for _ in range(20)} <= {b"a\n", b"c\n"}, what=f"{name}: b out")
        assert {_greeting(e) for _ in range(20)} == {b"a\n", b"c\n"}


@pytest.mark.parametrize("name", ENGINES)
def test_sni_passthrough_parity(name: str, tmp_path: Path, processes: object) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with contextlib.ExitStack() as stack:
        api, _ = stack.enter_context(s_server(processes, tmp_path, ca, NAMES[0]))
        internal, _ = stack.enter_context(s_server(processes, tmp_path, ca, NAMES[1]))
        dist = build(SNI_SPEC.format(api=api, internal=internal), tmp_path / "mesh")
        e = stack.enter_context(run_engine(name, dist, listener="pass"))

        def fetch(server_name: str) -> tuple[bytes, str]:
            """s_server's page and the DNS name of the certificate that answered."""
            with ctx.wrap_socket(_connect(e), server_hostname=server_name) as tls:
                cert = tls.getpeercert()
                tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                out = b""
                while chunk := tls.recv(65536):
                    out += chunk
            names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
            return out[:15], names[0]

        assert fetch(NAMES[0]) == (b"HTTP/1.0 200 ok", NAMES[0])
        assert fetch(NAMES[1]) == (b"HTTP/1.0 200 ok", NAMES[1])
        ctx.check_hostname = False  # a deeper name under *.internal.test: its server answers
        assert fetch("a.b.internal.test") == (b"HTTP/1.0 200 ok", NAMES[1])
        with pytest.raises((ssl.SSLError, ConnectionError)):
            fetch("unknown.example.com")
