"""Reload reopens a listener whose address or TLS settings changed, refusing no connection."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from polling import eventually
from runtime_harness import Runtime, backend, build_dist, run_dist, spec

from meshgen import certs

pytestmark = pytest.mark.e2e

SERVICE = """
services: {{a: {{discovery: {{static: [{{address: "{a}"}}]}}}}}}
routes: [{{name: r, match: {{host: shop}}, to: [{{service: a}}]}}]
"""


def tls_spec(a: str, cert: str, client_certificates: str = "none") -> str:
    """Listener ``edge`` on 127.0.0.1:0 with TLS from ``certs/<cert>.pem``."""
    access = "access: [{from: frontend, to: a}]\n" if client_certificates != "none" else ""
    return (
        "version: 1\n"
        "mesh: {name: shop, domain: mesh.test}\n"
        'admin: "127.0.0.1:0"\n'
        f'listeners: [{{name: edge, address: "127.0.0.1:0", tls: {{cert: certs/{cert}.pem, '
        f"key: certs/{cert}-key.pem, ca: certs/ca.pem, "
        f"client_certificates: {client_certificates}}}}}]\n" + SERVICE.format(a=a) + access
    )


def ready(dist: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((dist.parent / f"{dist.name}.ready.json").read_text())
    return data


def wait_for(
    condition: Callable[[], object], rt: Runtime, what: str, seconds: float = 10.0
) -> None:
    eventually(condition, timeout=seconds, what=what, context=lambda: rt.log_text()[-2000:])


def test_address_change_opens_the_new_address_and_closes_the_old(tmp_path: Path) -> None:
    """SIGHUP with a new listener address (another loopback address, port 0: the runtime binds a
    free port and reports it): the new one serves, the old one is closed."""
    with backend("a") as (a, _):
        dist = build_dist(tmp_path / "dist", spec(SERVICE.format(a=a)))
        with run_dist(dist) as rt:
            old_port = rt.port
            text = spec(SERVICE.format(a=a)).replace(
                'address: "127.0.0.1:0"}', 'address: "127.0.0.2:0"}'
            )
            build_dist(dist, text)
            rt.proc.send_signal(1)  # SIGHUP

            def edge() -> str:
                return str(ready(dist)["listeners"]["edge"])  # type: ignore[index]

            wait_for(lambda: edge().startswith("127.0.0.2:"), rt, "the new address ready")
            port = int(edge().rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.2", port, timeout=5)
            conn.request("GET", "/", headers={"Host": "shop"})
            assert conn.getresponse().status == 200
            conn.close()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", old_port), timeout=5).close()


@pytest.fixture
def mesh_root(tmp_path: Path) -> Path:
    ids = certs.MeshIdentities("shop", "mesh.test", ("edge", "edge2", "frontend"))
    certs.issue(ids, tmp_path / "certs")
    return tmp_path


def client_context(root: Path, identity: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=root / "certs/ca.pem")
    ctx.check_hostname = False  # the served identity changes on purpose; the chain is verified
    if identity is not None:
        ctx.load_cert_chain(root / f"certs/{identity}.pem", root / f"certs/{identity}-key.pem")
    return ctx


def https_get(port: int, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    """One request on a new connection; returns (status, DER of the served certificate)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "shop"})
        status = conn.getresponse().status
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
        assert der is not None
        return status, der
    finally:
        conn.close()


def der_of(root: Path, name: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert((root / f"certs/{name}.pem").read_text())


def start_load(
    port: int, ctx: ssl.SSLContext, served: list[bytes], errors: list[str], stop: threading.Event
) -> list[threading.Thread]:
    def run() -> None:
        while not stop.is_set():
            try:
                status, der = https_get(port, ctx)
                served.append(der)
                if status != 200:
                    errors.append(str(status))
            except Exception as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    return threads


def test_tls_change_on_the_same_address_fails_no_connection(mesh_root: Path) -> None:
    """A new listener certificate file (new TLS settings) on SIGHUP: the same port serves the
    new certificate and no connection fails meanwhile; then client_certificates: required
    takes effect on that same port (a context swap in place could not raise the verify mode),
    and the expiry gauge of the certificate file no longer loaded is gone."""
    served: list[bytes] = []
    errors: list[str] = []
    stop = threading.Event()
    with backend("a") as (a, _):
        dist = build_dist(mesh_root / "dist", tls_spec(a, "edge"))
        with run_dist(dist) as rt:
            anonymous = client_context(mesh_root)
            assert https_get(rt.port, anonymous) == (200, der_of(mesh_root, "edge"))
            threads = start_load(
                rt.port, client_context(mesh_root, "frontend"), served, errors, stop
            )
            try:
                wait_for(lambda: len(served) >= 30, rt, "load running")
                build_dist(dist, tls_spec(a, "edge2"))
                rt.proc.send_signal(1)  # SIGHUP
                new = der_of(mesh_root, "edge2")
                wait_for(lambda: served[-1] == new, rt, "the new certificate served")
                mark = len(served)
                wait_for(lambda: len(served) >= mark + 30, rt, "load after reload")
            finally:
                stop.set()
                for th in threads:
                    th.join()
            assert errors == []
            assert served[0] == der_of(mesh_root, "edge")
            assert ready(dist)["listeners"] == {"edge": f"127.0.0.1:{rt.port}"}
            gauge = 'meshgen_cert_expiry_timestamp_seconds{service="edge",file="certs/%s.pem"}'
            wait_for(lambda: gauge % "edge" not in rt.admin("/metrics"), rt, "old gauge dropped")
            assert gauge % "edge2" in rt.admin("/metrics")

            build_dist(dist, tls_spec(a, "edge2", "required"))
            rt.proc.send_signal(1)

            def refused() -> bool:
                try:
                    https_get(rt.port, anonymous)
                except (ssl.SSLError, ConnectionError):
                    return True
                return False

            wait_for(refused, rt, "a client without certificate refused")
            assert https_get(rt.port, client_context(mesh_root, "frontend"))[0] == 200
