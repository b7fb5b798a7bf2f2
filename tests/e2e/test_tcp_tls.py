"""TLS on tcp listeners: SNI passthrough to ``openssl s_server`` pairs, and TLS termination
with client certificates and identity-only access rules.

Passthrough: two real OpenSSL servers, each with its own certificate, behind one ``sni``
listener; a client that asks for a name gets the certificate of the server that name routes
to (so the handshake it completes *is* the routing proof: the proxy holds no key). A name that
matches nothing, no name, bytes that are not TLS and a client that sends nothing are closed
and counted.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import Process, require_binary
from polling import eventually
from runtime_harness import Runtime, build_dist, run_dist
from tcp_harness import address, closed, echo, exact, line, static, tcp_spec
from test_proxy_semantics import count

from meshgen import certs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

NAMES = ("api.example.com", "db.internal.test")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@contextlib.contextmanager
def s_server(
    processes: object, tmp_path: Path, ca: trustme.CA, name: str
) -> Iterator[tuple[str, Process]]:
    """``openssl s_server -www`` with a certificate for ``name``; yields (address, process)."""
    cert = ca.issue_cert(name)
    pem, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(pem))
    cert.private_key_pem.write_to_path(str(key))
    argv = [require_binary("openssl"), "s_server", "-accept", "127.0.0.1:0", "-cert", pem,
            "-key", key, "-www"]  # fmt: skip
    proc: Process = processes(argv, name=name)  # type: ignore[operator]
    found: list[str] = []

    def accepting() -> bool:
        found[:] = [ln.split()[1] for ln in proc.log.read_text().splitlines() if "ACCEPT" in ln]
        return bool(found)

    proc.wait_until(accepting, what=f"openssl s_server for {name}")
    yield found[0], proc


def client(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def fetch(rt: Runtime, ctx: ssl.SSLContext, name: str | None) -> bytes:
    """Handshake through the ``pass`` listener asking for ``name``; s_server's status page."""
    raw = socket.create_connection(address(rt, "pass"), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=name) as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        out = b""
        while chunk := tls.recv(65536):
            out += chunk
        return out


@pytest.fixture
def passthrough(
    processes: object, tmp_path: Path, ca: trustme.CA
) -> Iterator[tuple[Runtime, dict[str, str]]]:
    with (
        s_server(processes, tmp_path, ca, NAMES[0]) as (api, _),
        s_server(processes, tmp_path, ca, NAMES[1]) as (internal, _),
    ):
        services = (
            f"api: {{protocol: tcp, discovery: {static(api)}}}\n"
            f"internal: {{protocol: tcp, discovery: {static(internal)}}}\n"
        )
        listeners = (
            "  - name: pass\n    address: '127.0.0.1:0'\n    protocol: tcp\n"
            "    sni: {api.example.com: api, '*.internal.test': internal}\n"
        )
        dist = build_dist(tmp_path / "dist", tcp_spec(services, listeners))
        with run_dist(dist) as rt:
            yield rt, {"api": api, "internal": internal}


def test_each_name_reaches_its_own_server(
    passthrough: tuple[Runtime, dict[str, str]], ca: trustme.CA
) -> None:
    rt, _ = passthrough
    ctx = client(ca)
    for name in NAMES:  # the certificate verified for ``name`` proves the server behind it
        assert fetch(rt, ctx, name).startswith(b"HTTP/1.0 200 ok")
    assert count(rt, "meshgen_tcp_connections_total", listener="pass", service="api") == 1
    assert count(rt, "meshgen_tcp_connections_total", listener="pass", service="internal") == 1
    rx = count(rt, "meshgen_tcp_bytes_total", listener="pass", direction="rx")
    assert rx > 300  # the ClientHello itself is forwarded and counted


def test_openssl_s_client_with_servername(
    passthrough: tuple[Runtime, dict[str, str]], ca: trustme.CA, tmp_path: Path
) -> None:
    """``openssl s_client -servername``: a wildcard match, verified end to end."""
    rt, _ = passthrough
    host, port = address(rt, "pass")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    proc = subprocess.run(
        [require_binary("openssl"), "s_client", "-connect", f"{host}:{port}",
         "-servername", "x.db.internal.test", "-CAfile", str(bundle), "-verify_return_error",
         "-verify_hostname", "db.internal.test"],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    # verified for db.internal.test: the server behind '*.internal.test', not api's
    assert "Verify return code: 0 (ok)" in out


def test_unmatched_missing_and_non_tls_are_closed_and_counted(
    passthrough: tuple[Runtime, dict[str, str]], ca: trustme.CA
) -> None:
    rt, _ = passthrough
    ctx = client(ca)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(rt, ctx, "other.example.com")
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(rt, blind, None)  # no server_name extension at all
    with socket.create_connection(address(rt, "pass"), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        assert closed(s)
    with socket.create_connection(address(rt, "pass"), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x40\x00" + b"\x01" * 65536)  # a record too large to be a hello
        assert closed(s)
    eventually(lambda: count(rt, "meshgen_connections_rejected_total", reason="sni_no_match") == 4)
    assert count(rt, "meshgen_tcp_connections_total") == 0


def test_a_client_that_sends_no_hello_is_closed_after_the_wait(
    passthrough: tuple[Runtime, dict[str, str]],
) -> None:
    rt, _ = passthrough
    with socket.create_connection(address(rt, "pass"), timeout=15) as s:
        started = time.monotonic()
        s.sendall(b"\x16\x03\x01")  # the start of a record, then silence
        assert closed(s)
        assert 4.0 < time.monotonic() - started < 10.0
    assert count(rt, "meshgen_connections_rejected_total", reason="sni_timeout") == 1


@pytest.fixture
def mesh_certs(tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    certs.issue(certs.MeshIdentities("shop", "mesh.test", ("db", "orders", "billing")), folder)
    return folder


def _caller(folder: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    if name is not None:
        ctx.load_cert_chain(folder / f"{name}.pem", folder / f"{name}-key.pem")
    return ctx


def test_tls_termination_admits_callers_by_identity(tmp_path: Path, mesh_certs: Path) -> None:
    """A tcp listener that terminates TLS forwards plaintext; with client certificates the
    access rules decide by identity alone, and a denial closes and counts (on an audit
    listener it is forwarded, logged and counted as audit)."""
    with echo("plain") as (addr, _):
        listener = (
            "  - name: %s\n    address: '127.0.0.1:0'\n    protocol: tcp\n"
            "    to: [{service: db}]\n    access: %s\n"
            "    tls: {cert: certs/db.pem, key: certs/db-key.pem, ca: certs/ca.pem, "
            "client_certificates: required}\n"
        )
        listeners = listener % ("secure", "enforce") + listener % ("watch", "audit")
        text = tcp_spec(
            f"db: {{protocol: tcp, discovery: {static(addr)}}}\n",
            listeners,
            "access:\n  - {from: orders, to: db}\n",
        )
        with run_dist(build_dist(tmp_path / "dist", text)) as rt:
            raw = socket.create_connection(address(rt, "secure"), timeout=10)
            with _caller(mesh_certs, "orders").wrap_socket(raw, server_hostname="db") as s:
                assert line(s) == b"plain\n"
                s.sendall(b"over tls\n")
                assert exact(s, 9) == b"over tls\n"
            raw = socket.create_connection(address(rt, "secure"), timeout=10)
            with _caller(mesh_certs, "billing").wrap_socket(raw, server_hostname="db") as s:
                assert closed(s)
            assert count(rt, "meshgen_denied_total", listener="secure", to="db") == 1
            assert count(rt, "meshgen_denied_total", **{"from": "billing"}) == 1
            raw = socket.create_connection(address(rt, "secure"), timeout=10)
            try:  # TLS 1.3: the refusal may come as an alert after the client's handshake
                with _caller(mesh_certs, None).wrap_socket(raw, server_hostname="db") as s:
                    assert s.recv(1) == b""
            except (ssl.SSLError, ConnectionError):
                pass
            assert count(rt, "meshgen_tcp_connections_total", listener="secure") == 1
            raw = socket.create_connection(address(rt, "watch"), timeout=10)
            with _caller(mesh_certs, "billing").wrap_socket(raw, server_hostname="db") as s:
                assert line(s) == b"plain\n"  # audit: forwarded, logged and counted
            assert count(rt, "meshgen_denied_total", listener="watch", mode="audit") == 1
            assert "listener watch forwarded a connection from caller 'billing'" in rt.log_text()
