"""`meshgen explain` on tcp listeners says what the running runtime does with a connection:
for server names hypothesis generates, the echo server a ClientHello reaches through an sni
listener is the service explain names (closed when explain says no pattern matches), and on
a listener that terminates TLS with client certificates explain's identity verdict is the
runtime's (forwarded, closed, or forwarded by an audit listener). The runtime runs once."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from runtime_harness import Runtime, build_dist, run_dist
from tcp_harness import address, closed, echoes, line, static, tcp_spec

from meshgen import certs, pipeline
from meshgen.model import Mesh
from meshgen.plan import to_tables
from meshgen.review.explain import Request, Trace, explain_request
from meshgen.runtime.tables import Tables

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CALLERS = ("orders", "billing")
LISTENERS = """\
  - name: pass
    address: '127.0.0.1:0'
    protocol: tcp
    sni: {db.mesh.test: db, '*.mesh.test': cache, '*.eu.mesh.test': dr}
  - name: secure
    address: '127.0.0.1:0'
    protocol: tcp
    to: [{service: db}]
    tls: {cert: certs/db.pem, key: certs/db-key.pem, ca: certs/ca.pem,
          client_certificates: optional}
  - name: watch
    address: '127.0.0.1:0'
    protocol: tcp
    access: audit
    to: [{service: db}]
    tls: {cert: certs/db.pem, key: certs/db-key.pem, ca: certs/ca.pem,
          client_certificates: optional}
"""
ACCESS = "access:\n  - {from: orders, to: db}\n"


@dataclass(repr=False)
class Running:
    mesh: Mesh
    tables: Tables
    runtime: Runtime
    certs: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("explain-tcp")
    identities = certs.MeshIdentities("shop", "mesh.test", ("db", *CALLERS))
    certs.issue(identities, folder / "certs")
    with echoes("db", "cache", "dr") as addr:
        services = "".join(
            f"{n}: {{protocol: tcp, discovery: {static(a)}}}\n" for n, a in addr.items()
        )
        dist = build_dist(folder / "dist", tcp_spec(services, LISTENERS, ACCESS))
        mesh, diags = pipeline.load_mesh(folder / "mesh.yaml")
        assert mesh is not None, diags
        with run_dist(dist) as rt:
            yield Running(mesh, to_tables(mesh), rt, folder / "certs")


def _hello(name: str) -> bytes:
    """A real ClientHello asking for ``name`` (Python's ssl, through memory buffers)."""
    ctx = ssl.create_default_context()
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def _reached(rt: Runtime, listener: str, first: bytes = b"") -> str | None:
    """The echo server a connection reaches (its greeting), or None when it is closed."""
    with socket.create_connection(address(rt, listener), timeout=10) as sock:
        sock.sendall(first)
        try:
            return line(sock).decode().strip()
        except ConnectionError:
            return None


def _explain(m: Running, host: str, listener: str, caller: str | None = None) -> Trace:
    return explain_request(
        m.mesh, m.tables, Request("GET", "/", (("host", host),), caller), listener
    )


LABELS = st.sampled_from(["db", "eu", "mesh", "test", "a", "x-1"])


@settings(max_examples=30, deadline=None)
@given(st.lists(LABELS, min_size=1, max_size=5), st.booleans())
@example(["db", "mesh", "test"], False)  # exact, though two wildcards match too
@example(["db", "mesh", "test"], True)
@example(["a", "eu", "mesh", "test"], False)  # the longer of two wildcards
@example(["x-1", "a", "mesh", "test"], False)  # a wildcard at depth
@example(["mesh", "test"], False)  # no label before the suffix: no match
def test_sni_explain_names_the_service_a_hello_reaches(
    running: Running, labels: list[str], upper: bool
) -> None:
    name = ".".join(labels)
    name = name.upper() if upper else name
    trace = _explain(running, name, "pass")
    reached = _reached(running.runtime, "pass", _hello(name))
    assert reached == (trace.branches[0].service if trace.branches else None), trace.sni
    if reached is None:
        assert trace.outcome.startswith("connection closed: no sni pattern matches")


@pytest.mark.parametrize("listener", ["secure", "watch"])
@pytest.mark.parametrize("caller", [*CALLERS, None])
def test_explain_gives_the_runtime_connection_verdict(
    running: Running, listener: str, caller: str | None
) -> None:
    trace = _explain(running, "db", listener, caller)
    assert trace.access is not None
    ctx = ssl.create_default_context(cafile=str(running.certs / "ca.pem"))
    if caller is not None:
        ctx.load_cert_chain(running.certs / f"{caller}.pem", running.certs / f"{caller}-key.pem")
    raw = socket.create_connection(address(running.runtime, listener), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="db") as tls:
        if trace.outcome.startswith("forwarded"):
            assert line(tls) == b"db\n", trace.access
            assert trace.access.allowed or listener == "watch"
        else:
            assert trace.outcome.startswith("connection closed: access denied")
            assert closed(tls) and listener == "secure"
