"""TLS against real servers in subprocesses: refusals, mTLS, SPIFFE identities, rotation.

The servers are Python processes on 127.0.0.1:0 that answer each connection with one line
(the caller identity the runtime's ``peer_identity`` extracts) and close it. The mesh server
uses the runtime's own ``TlsContexts`` and derives the next generation on SIGHUP.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import socket
import ssl
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from polling import eventually
from pytest_httpserver import HTTPServer
from runtime_harness import Runtime, run_dist, write_dist

from meshgen import certs
from meshgen.runtime import tables as t
from meshgen.runtime.policy import tls
from meshgen.runtime.tables import ClientTls
from tests.conftest import Process

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

SERVER = r"""
import os, signal, socket, ssl, sys, warnings
from pathlib import Path
mode, root, port_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "tls11":  # a legacy server: TLS 1.1 only, which OpenSSL 3 needs @SECLEVEL=0 for
    warnings.simplefilter("ignore", DeprecationWarning)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(root / "server.pem")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    current = lambda: ctx
    identity = lambda s: s.version()
else:  # the runtime's listener context: `mode` is client_certificates
    from meshgen.runtime.tables import Listener, MeshInfo, ServerTls, Tables
    from meshgen.runtime.policy.tls import TlsContexts, peer_identity
    server = ServerTls("certs/edge.pem", "certs/edge-key.pem", "certs/ca.pem", mode)
    tables = Tables(MeshInfo("shop", "mesh.test"), (), (),
                    (Listener("edge", "127.0.0.1", 0, (), server),))
    contexts = [TlsContexts(tables, root)]
    def reload(signum, frame):
        contexts.append(contexts.pop().derive(tables))
        print("reloaded", flush=True)
    signal.signal(signal.SIGHUP, reload)
    opened_with = contexts[0].listener("edge")  # like a listening socket: fixed at start
    current = lambda: opened_with
    identity = lambda s: peer_identity(s, "shop") or "-"
sock = socket.create_server(("127.0.0.1", 0))
tmp = port_file.with_suffix(".tmp")
tmp.write_text(str(sock.getsockname()[1]))
os.replace(tmp, port_file)
while True:
    conn, _ = sock.accept()
    try:
        with current().wrap_socket(conn, server_side=True) as tls_conn:
            who = identity(tls_conn)
            tls_conn.sendall(who.encode() + b"\n")
            print("served", who, flush=True)
    except (ssl.SSLError, OSError) as exc:
        print("handshake failed:", exc, flush=True)
"""

Start = Callable[..., Process]


def start_server(processes: Start, tmp_path: Path, mode: str, root: Path) -> tuple[Process, int]:
    script = tmp_path / "tls_server.py"
    script.write_text(SERVER)
    port_file = tmp_path / f"port-{mode}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = processes([sys.executable, script, mode, root, port_file], name=mode, env=env)
    proc.wait_until(port_file.exists, what=f"tls server {mode}")
    return proc, int(port_file.read_text())


def exchange(ctx: ssl.SSLContext, port: int, server_hostname: str) -> tuple[ssl.SSLSocket, str]:
    """Connect, complete the handshake, read the server's one line."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
    line = sock.makefile("rb").readline().decode().strip()
    return sock, line


def call(up: tls.UpstreamTls, port: int, host: str = "127.0.0.1") -> str:
    """What the proxy does for an upstream: handshake, identity check, then talk."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with up.context.wrap_socket(raw, server_hostname=up.server_hostname(host)) as sock:
        up.check_peer(sock)
        return sock.makefile("rb").readline().decode().strip()


@pytest.fixture
def mesh_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    ids = certs.MeshIdentities("shop", "mesh.test", ("edge", "frontend", "payments"))
    certs.issue(ids, root / "certs")
    return root


def upstream(root: Path, **kw: object) -> tls.UpstreamTls:
    up = tls.upstream_tls("edge", ClientTls(**{"mode": "simple", "ca": "certs/ca.pem", **kw}), root)  # type: ignore[arg-type]
    assert up is not None
    return up


def test_tls11_upstream_is_refused(processes: Start, tmp_path: Path) -> None:
    """A TLS 1.1 server is refused by the runtime, while a permissive client does connect."""
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    _, port = start_server(processes, tmp_path, "tls11", tmp_path)

    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(permissive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    sock, line = exchange(permissive, port, "127.0.0.1")
    sock.close()
    assert line == "TLSv1.1"  # positive control: the server really speaks TLS 1.1

    up = tls.upstream_tls("legacy", ClientTls(mode="simple", ca=str(tmp_path / "ca.pem")), tmp_path)
    assert up is not None
    with pytest.raises(ssl.SSLError, match=r"UNSUPPORTED_PROTOCOL|PROTOCOL_VERSION|NO_PROTOCOLS"):
        call(up, port)


def test_unknown_ca_wrong_sni_and_wrong_identity_are_refused(
    processes: Start, tmp_path: Path, mesh_root: Path
) -> None:
    _, port = start_server(processes, tmp_path, "none", mesh_root)
    assert call(upstream(mesh_root), port) == "-"  # control: the right CA, IP SAN
    assert call(upstream(mesh_root, sni="edge.mesh.test"), port) == "-"
    assert call(upstream(mesh_root, subject_alt_names=("spiffe://shop/edge",)), port) == "-"

    other = trustme.CA()
    other.cert_pem.write_to_path(tmp_path / "other-ca.pem")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        call(upstream(mesh_root, ca=str(tmp_path / "other-ca.pem")), port)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        call(upstream(mesh_root, sni="payments.mesh.test"), port)
    with pytest.raises(tls.PeerIdentityError, match="spiffe://shop/payments"):
        call(upstream(mesh_root, subject_alt_names=("spiffe://shop/payments",)), port)


def test_mtls_listener_rejects_missing_and_foreign_client_certs(
    processes: Start, tmp_path: Path, mesh_root: Path
) -> None:
    """client_certificates required: no cert, or a cert from another CA, fails the handshake."""
    proc, port = start_server(processes, tmp_path, "required", mesh_root)
    mutual = upstream(
        mesh_root, mode="mutual", cert="certs/frontend.pem", key="certs/frontend-key.pem"
    )
    assert call(mutual, port) == "frontend"  # control, and the identity of a real handshake

    failures = (ssl.SSLError, ConnectionResetError, BrokenPipeError)
    with pytest.raises(failures, match=r"CERTIFICATE_REQUIRED|certificate required"):
        call(upstream(mesh_root), port)
    other = trustme.CA()
    other.issue_cert("frontend").private_key_and_cert_chain_pem.write_to_path(tmp_path / "f.pem")
    foreign = upstream(
        mesh_root, mode="mutual", cert=str(tmp_path / "f.pem"), key=str(tmp_path / "f.pem")
    )
    with pytest.raises(failures, match=r"UNKNOWN_CA|unknown ca"):
        call(foreign, port)
    proc.wait_until(lambda: proc.log.read_text().count("handshake failed") >= 2, what="log")
    assert proc.log.read_text().count("served") == 1


def test_optional_listener_serves_anonymous_callers_without_identity(
    processes: Start, tmp_path: Path, mesh_root: Path
) -> None:
    _, port = start_server(processes, tmp_path, "optional", mesh_root)
    assert call(upstream(mesh_root), port) == "-"
    mutual = upstream(
        mesh_root, mode="mutual", cert="certs/payments.pem", key="certs/payments-key.pem"
    )
    assert call(mutual, port) == "payments"


def test_rotation_with_reload_fails_no_connection(
    processes: Start, tmp_path: Path, mesh_root: Path
) -> None:
    """Re-issue the certificates, SIGHUP: the next handshakes see the new certificate, and
    every connection before, during and after the rotation succeeds."""
    proc, port = start_server(processes, tmp_path, "required", mesh_root)
    mutual = upstream(
        mesh_root, mode="mutual", cert="certs/frontend.pem", key="certs/frontend-key.pem"
    )

    def served_cert() -> bytes:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with mutual.context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            der = sock.getpeercert(binary_form=True)
            assert sock.makefile("rb").readline() == b"frontend\n"
            assert der is not None
            return der

    before = served_cert()
    ids = certs.MeshIdentities("shop", "mesh.test", ("edge", "frontend", "payments"))
    certs.issue(ids, mesh_root / "certs", force=True, keep_ca=True)
    assert served_cert() == before  # files changed, not yet reloaded
    proc.popen.send_signal(signal.SIGHUP)
    proc.wait_until(lambda: "reloaded" in proc.log.read_text(), what="reload")
    after = served_cert()
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert((mesh_root / "certs/edge.pem").read_text())
    assert "handshake failed" not in proc.log.read_text()


# --- the whole runtime: mTLS listener, access rules, TLS upstream, rotation -----------------


@pytest.fixture
def payments_backend(mesh_root: Path) -> Iterator[HTTPServer]:
    """payments over mutual TLS: its own certificate, callers need one from the mesh CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(mesh_root / "certs/payments.pem", mesh_root / "certs/payments-key.pem")
    ctx.load_verify_locations(mesh_root / "certs/ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=ctx)
    server.expect_request("/charge", method="POST").respond_with_data("charged")
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def mtls_tables(backend: HTTPServer) -> t.Tables:
    route = t.Route("pay", t.Match(), (t.Target("payments", None, 100, 5.0, 60.0, None),))
    moved = t.Route("moved", t.Match(path="/old/"), redirect=t.Redirect("https://new.test/"))
    server_tls = t.ServerTls("certs/edge.pem", "certs/edge-key.pem", "certs/ca.pem", "optional")
    return t.Tables(
        mesh=t.MeshInfo("shop", "mesh.test", admin_port=0),
        clusters=(
            t.Cluster("payments", t.StaticDiscovery((t.Endpoint("127.0.0.1", backend.port),))),
        ),
        routes=(moved, route),
        listeners=(t.Listener("edge", "127.0.0.1", 0, ("moved", "pay"), server_tls),),
        client_tls={
            "payments": t.ClientTls(
                mode="mutual",
                ca="certs/ca.pem",
                cert="certs/frontend.pem",
                key="certs/frontend-key.pem",
                subject_alt_names=("spiffe://shop/payments",),
            )
        },
        access=(t.AccessRule("frontend", "payments", ("POST",), ("/charge",)),),
    )


def https(
    port: int, root: Path, identity: str | None, method: str, path: str
) -> tuple[int, bytes, str | None]:
    """One request to the runtime's TLS listener, as ``identity`` (None: no certificate):
    status, body and ``location``."""
    ctx = ssl.create_default_context(cafile=root / "certs/ca.pem")
    if identity is not None:
        ctx.load_cert_chain(root / f"certs/{identity}.pem", root / f"certs/{identity}-key.pem")
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        body = b"{}" if method == "POST" else None  # a GET with a body is refused (400)
        conn.request(method, path, body=body, headers={"Host": "payments"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("location")
    finally:
        conn.close()


def test_runtime_enforces_access_over_mtls(
    tmp_path: Path, mesh_root: Path, payments_backend: HTTPServer
) -> None:
    """An allowed caller gets through to a TLS upstream; denied ones get 403, the upstream
    sees nothing, and the denial is counted with the caller's name; a redirect route answers
    every caller the listener admits, with or without an identity, and denies nothing."""
    dist = write_dist(mesh_root / "dist", mtls_tables(payments_backend))
    with run_dist(dist) as rt:
        assert https(rt.port, mesh_root, "frontend", "POST", "/charge")[:2] == (200, b"charged")
        assert len(payments_backend.log) == 1
        for identity, method, path in (
            ("frontend", "GET", "/charge"),
            ("frontend", "POST", "/chargeback"),
            ("frontend", "POST", "/charge/../admin"),
            ("payments", "POST", "/charge"),  # a valid identity without a rule
            (None, "POST", "/charge"),  # optional listener, no certificate
        ):
            status, _, _ = https(rt.port, mesh_root, identity, method, path)
            assert status == 403, (identity, method, path)
        assert len(payments_backend.log) == 1  # nothing denied was forwarded
        admin = str(rt.ready["admin"])
        admin_host, admin_port = admin.rsplit(":", 1)
        metrics = http.client.HTTPConnection(admin_host, int(admin_port), timeout=5)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        denied = 'meshgen_denied_total{listener="edge",from="%s",to="payments",mode="enforce"} %d'
        assert denied % ("frontend", 3) in text.splitlines()
        assert denied % ("payments", 1) in text.splitlines()
        assert denied % ("", 1) in text.splitlines()
        assert "meshgen_cert_expiry_timestamp_seconds" in text
        # a redirect forwards nothing: it answers every caller the listener admits (as HAProxy)
        for identity in ("frontend", "payments", None):
            moved = https(rt.port, mesh_root, identity, "GET", "/old/x")
            assert moved == (301, b"", "https://new.test/"), identity
        metrics.request("GET", "/metrics")
        after = metrics.getresponse().read().decode()
        assert [ln for ln in after.splitlines() if ln.startswith("meshgen_denied_total")] == [
            ln for ln in text.splitlines() if ln.startswith("meshgen_denied_total")
        ]


def test_runtime_rotation_with_reload_fails_no_request(
    tmp_path: Path, mesh_root: Path, payments_backend: HTTPServer
) -> None:
    """New certificates + SIGHUP: the listener serves the new certificate, requests keep working."""
    dist = write_dist(mesh_root / "dist", mtls_tables(payments_backend))
    with run_dist(dist) as rt:

        def served() -> bytes:
            ctx = ssl.create_default_context(cafile=mesh_root / "certs/ca.pem")
            raw = socket.create_connection(("127.0.0.1", rt.port), timeout=5)
            with ctx.wrap_socket(raw, server_hostname="edge") as sock:
                der = sock.getpeercert(binary_form=True)
                assert der is not None
                return der

        before = served()
        ids = certs.MeshIdentities("shop", "mesh.test", ("edge", "frontend", "payments"))
        certs.issue(ids, mesh_root / "certs", force=True, keep_ca=True)
        rt.proc.send_signal(signal.SIGHUP)
        statuses: list[int] = []

        def renewed() -> bool:
            statuses.append(https(rt.port, mesh_root, "frontend", "POST", "/charge")[0])
            return served() != before

        eventually(renewed, interval=0, context=lambda: rt.log_text()[-2000:])
        for _ in range(5):
            statuses.append(https(rt.port, mesh_root, "frontend", "POST", "/charge")[0])
        assert set(statuses) == {200}
        assert served() == ssl.PEM_cert_to_DER_cert((mesh_root / "certs/edge.pem").read_text())


def test_a_tls_client_that_never_finishes_its_handshake_is_dropped_at_the_head_timeout(
    mesh_root: Path, payments_backend: HTTPServer
) -> None:
    """The handshake comes before the request head, so the listener's request_head_timeout
    bounds it too (asyncio's own default is 60 s): silent connections and one that stops
    half-way through its ClientHello are closed, and the listener serves on."""
    tables = mtls_tables(payments_backend)
    (edge,) = tables.listeners
    limited = dataclasses.replace(edge, limits=t.Limits(request_head_timeout_s=1.0))
    dist = write_dist(mesh_root / "dist", dataclasses.replace(tables, listeners=(limited,)))
    with run_dist(dist) as rt:
        started = time.monotonic()
        silent = [socket.create_connection(("127.0.0.1", rt.port), timeout=10) for _ in range(3)]
        partial = socket.create_connection(("127.0.0.1", rt.port), timeout=10)
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello begun
        for sock in (*silent, partial):
            with sock:
                assert sock.recv(1) == b""  # closed by the proxy (a timeout raises)
        assert time.monotonic() - started < 5
        assert https(rt.port, mesh_root, "frontend", "POST", "/charge")[:2] == (200, b"charged")


def admin_metrics(rt: Runtime) -> list[str]:
    """The runtime's /metrics lines."""
    admin_host, admin_port = str(rt.ready["admin"]).rsplit(":", 1)
    conn = http.client.HTTPConnection(admin_host, int(admin_port), timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode().splitlines()
    finally:
        conn.close()


def test_a_tls_listener_counts_connections_from_the_accept(
    mesh_root: Path, payments_backend: HTTPServer
) -> None:
    """max_connections holds while handshakes are unfinished (HAProxy counts at accept): two
    silent connections fill a listener of two, the third is closed at once and counted, and a
    place freed by a handshake that timed out serves a real caller again."""
    tables = mtls_tables(payments_backend)
    (edge,) = tables.listeners
    limits = t.Limits(max_connections=2, request_head_timeout_s=3.0)
    limited = dataclasses.replace(edge, limits=limits)
    dist = write_dist(mesh_root / "dist", dataclasses.replace(tables, listeners=(limited,)))
    with run_dist(dist) as rt:
        silent = [socket.create_connection(("127.0.0.1", rt.port), timeout=10) for _ in range(2)]
        time.sleep(0.3)  # both accepted
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as third:
            assert third.recv(1) == b""
        assert time.monotonic() - started < 1.5  # refused, not left to the 3 s timeout
        refused = 'meshgen_connections_rejected_total{listener="edge",reason="max_connections"} 1'
        assert refused in admin_metrics(rt)
        for sock in silent:
            with sock:
                assert sock.recv(1) == b""  # the handshake timed out
        assert https(rt.port, mesh_root, "frontend", "POST", "/charge")[:2] == (200, b"charged")
        assert refused in admin_metrics(rt)  # the places were given back: no new refusal


def test_a_request_sent_with_the_clients_finished_is_served(
    mesh_root: Path, payments_backend: HTTPServer
) -> None:
    """A TLS 1.3 client's first request can arrive in the same read as its Finished, before the
    listener's protocol has the connection: it is kept and served, not lost."""
    dist = write_dist(mesh_root / "dist", mtls_tables(payments_backend))
    ctx = ssl.create_default_context(cafile=mesh_root / "certs/ca.pem")
    ctx.load_cert_chain(mesh_root / "certs/frontend.pem", mesh_root / "certs/frontend-key.pem")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with run_dist(dist) as rt:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls_client = ctx.wrap_bio(incoming, outgoing, server_hostname="edge")
        with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as sock:
            while True:
                try:
                    tls_client.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
            request = b"POST /charge HTTP/1.1\r\nHost: payments\r\nContent-Length: 2\r\n\r\n{}"
            tls_client.write(request)
            sock.sendall(outgoing.read())  # the Finished and the request in one send
            answer = b""
            while b"charged" not in answer:
                incoming.write(sock.recv(65536))
                try:
                    answer += tls_client.read(65536)
                except ssl.SSLWantReadError:
                    continue
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
