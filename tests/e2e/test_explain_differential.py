"""`meshgen explain` says what the running runtime does: for requests hypothesis generates,
the route explain chooses is the route the runtime's access log records (404 when none), a
redirect is a redirect, and explain's access verdict is the runtime's (403 or forwarded) for a
caller with a certificate and one without. The runtime runs once for the module."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen import pipeline
from meshgen.model import Mesh
from meshgen.plan import to_tables
from meshgen.review.explain import Request, explain_request
from meshgen.runtime.tables import Tables
from tests.e2e.runtime_harness import Runtime, backend, build_dist, run_dist
from tests.polling import eventually

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CERTS = REPO / "examples" / "mtls" / "certs"

SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
admin: "127.0.0.1:0"
services:
  api: {{discovery: {{static: [{{address: "{backend}"}}]}}}}
  items: {{discovery: {{static: [{{address: "{backend}"}}]}}}}
  beta: {{discovery: {{static: [{{address: "{backend}"}}]}}}}
routes:
  - name: admin
    match: {{host: api, path_exact: /admin, methods: [POST]}}
    to: [{{service: api}}]
  - name: api-v2
    match: {{host: api, path_prefix: /api/v2, headers: {{x-version: {{exact: "2"}}}}}}
    to: [{{service: api}}]
  - {{name: api, match: {{host: api, path_prefix: /api}}, to: [{{service: api}}]}}
  - {{name: items, match: {{host: api, path_regex: "/items/[0-9]+"}}, to: [{{service: items}}]}}
  - name: beta
    match: {{path_prefix: /, headers: {{x-beta: {{present: true}}, x-user: {{prefix: b}}}}}}
    to: [{{service: beta}}]
  - {{name: moved, match: {{host: old}}, redirect: {{location: "http://api/", status: 308}}}}
  - name: catch
    match: {{host: catch.mesh.test, methods: [GET, HEAD]}}
    to: [{{service: items}}]
listeners:
  - {{name: edge, address: "127.0.0.1:0"}}
  - name: secure
    address: "127.0.0.1:0"
    tls:
      cert: certs/mesh-edge.pem
      key: certs/mesh-edge-key.pem
      ca: certs/ca.pem
      client_certificates: optional
  - name: audited
    address: "127.0.0.1:0"
    access: audit
    tls:
      cert: certs/mesh-edge.pem
      key: certs/mesh-edge-key.pem
      ca: certs/ca.pem
      client_certificates: optional
access:
  - {{from: frontend, to: api, methods: [GET], paths: [/api]}}
  - {{from: frontend, to: items}}
  - {{from: "*", to: beta, methods: [GET]}}
"""

METHODS = st.sampled_from(["GET", "POST", "DELETE", "HEAD"])
HOSTS = st.sampled_from(
    ["api", "API", "api:80", "api.", "old", "catch.mesh.test", "catch.mesh.test:15001", "nope"]
)
PATHS = st.sampled_from(
    [
        "/",
        "/admin",
        "/admin/",
        "/api",
        "/apix",
        "/api/v2",
        "/api/v2/x",
        "/api/../admin",
        "/%61pi/v2/y",
        "//api//v2",
        "/api/%2E%2E/admin",
        "/items/12",
        "/items/12/x",
        "/items/x",
        "/api?q=1",
        "/API",
        "/x/./api",
    ]
)
HEADERS = st.dictionaries(
    st.sampled_from(["x-version", "x-beta", "x-user"]), st.sampled_from(["2", "3", "bob", "al"])
)


@dataclass(repr=False)
class Running:
    mesh: Mesh
    tables: Tables
    runtime: Runtime
    log: Path
    ports: dict[str, int]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("explain")
    shutil.copytree(CERTS, folder / "certs")
    for key in (folder / "certs").glob("*-key.pem"):
        key.chmod(0o600)
    with backend("b") as (address, _):
        text = SPEC.format(backend=address)
        dist = build_dist(folder / "dist", text)
        mesh, diags = pipeline.load_mesh(folder / "mesh.yaml")
        assert mesh is not None, diags
        log = folder / "access.log"
        with run_dist(dist, "--access-log", str(log)) as rt:
            bound: dict[str, str] = rt.ready["listeners"]  # type: ignore[assignment]
            ports = {name: int(address.rsplit(":", 1)[1]) for name, address in bound.items()}
            yield Running(mesh, to_tables(mesh), rt, log, ports)


def _send(
    m: Running,
    listener: str,
    method: str,
    host: str,
    path: str,
    headers: dict[str, str],
    cert: bool = False,
) -> tuple[int, dict[str, object]]:
    """One request on a fresh connection to ``listener`` (TLS but on edge; with the frontend's
    client certificate when ``cert``); the status and the access-log line it produced."""
    before = m.log.read_text().count("\n") if m.log.exists() else 0
    if listener != "edge":
        ctx = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
        ctx.check_hostname = False
        if cert:
            ctx.load_cert_chain(CERTS / "frontend.pem", CERTS / "frontend-key.pem")
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", m.ports[listener], timeout=10, context=ctx
        )
    else:
        conn = http.client.HTTPConnection(m.runtime.host, m.runtime.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    finally:
        conn.close()
    lines = eventually(
        lambda: m.log.read_text().splitlines()[before:],
        what=f"the access-log line of {method} {host} {path}",
    )
    return status, json.loads(lines[0])


@settings(max_examples=60)
@given(METHODS, HOSTS, PATHS, HEADERS)
def test_explain_chooses_the_route_the_runtime_takes(
    running: Running, method: str, host: str, path: str, headers: dict[str, str]
) -> None:
    request = Request(method, path, (("host", host), *headers.items()))
    trace = explain_request(running.mesh, running.tables, request, "edge")
    status, logged = _send(running, "edge", method, host, path, headers)
    assert logged["route"] == (trace.route or ""), trace
    if trace.route is None:
        assert status == 404 and trace.outcome.startswith("404")
    elif trace.route == "moved":
        assert status == 308 and trace.outcome.startswith("308")
    else:  # the backend answers (HEAD: 501, its handler has no do_HEAD)
        assert status == (501 if method == "HEAD" else 200)
        assert trace.outcome.startswith("forwarded")


@settings(max_examples=60)
@given(METHODS, HOSTS, PATHS, HEADERS, st.booleans(), st.sampled_from(["secure", "audited"]))
def test_explain_gives_the_runtime_access_verdict(
    running: Running,
    method: str,
    host: str,
    path: str,
    headers: dict[str, str],
    cert: bool,
    listener: str,
) -> None:
    """On the enforcing listener a denial is a 403; on the audit one the request goes through
    (explain says both); with and without a client certificate."""
    caller = "frontend" if cert else None
    request = Request(method, path, (("host", host), *headers.items()), caller)
    trace = explain_request(running.mesh, running.tables, request, listener)
    status, logged = _send(running, listener, method, host, path, headers, cert)
    assert logged["route"] == (trace.route or "")
    if trace.access is None:  # no route, or a redirect: access is not asked
        assert status in (404, 308)
    elif trace.access.outcome.startswith("forwarded"):
        assert status == (501 if method == "HEAD" else 200), trace.access
        assert trace.access.allowed or listener == "audited"
    else:
        assert status == 403 and listener == "secure", trace.access
