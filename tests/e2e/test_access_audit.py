"""`access: audit` on the runtime: what the rules deny is forwarded, logged and counted.

The DIST is built from a mesh.yaml by the compiler (schema, model, tables), run as a real
subprocess with an mTLS listener in front of a TLS backend, and called with real client
certificates: an allowed call, calls the rules deny (wrong method, an identity without a rule,
no certificate) and a burst that overruns the audit log's rate limit.
"""

from __future__ import annotations

import http.client
import re
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from runtime_harness import run_dist
from test_tls_e2e import https, mesh_root, payments_backend

from meshgen.emit import emit
from meshgen.pipeline import compile_spec

pytestmark = pytest.mark.e2e
__all__ = ["mesh_root", "payments_backend"]  # fixtures used by name

SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
admin: 127.0.0.1:0
services:
  payments:
    discovery: {{static: [{{address: 127.0.0.1:{port}}}]}}
    tls:
      mode: mutual
      ca: certs/ca.pem
      cert: certs/frontend.pem
      key: certs/frontend-key.pem
      subject_alt_names: [spiffe://shop/payments]
routes:
  - name: pay
    to: [{{service: payments}}]
listeners:
  - name: edge
    address: 127.0.0.1:0
    access: {mode}
    tls: {{cert: certs/edge.pem, key: certs/edge-key.pem, ca: certs/ca.pem,
           client_certificates: optional}}
access:
  - {{from: frontend, to: payments, methods: [POST], paths: [/charge]}}
"""


def _build(root: Path, backend: HTTPServer, mode: str) -> Path:
    spec = root / "mesh.yaml"
    spec.write_text(SPEC.format(port=backend.port, mode=mode))
    result = compile_spec(spec)
    assert result.files is not None, result.diagnostics
    emit(result.files, root / "dist")
    return root / "dist"


def _denied(admin: str) -> dict[str, float]:
    host, port = admin.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("meshgen_denied_total{")
    }


def test_audit_forwards_logs_and_counts_what_the_rules_deny(
    mesh_root: Path, payments_backend: HTTPServer
) -> None:
    """Denied requests reach the backend (no 403), each is counted with mode="audit" and its
    caller, and the log names listener, caller, method, path, route and verdict."""
    payments_backend.expect_request("/charge", method="GET").respond_with_data("looked")
    payments_backend.expect_request("/refund", method="POST").respond_with_data("refunded")
    dist = _build(mesh_root, payments_backend, "audit")
    with run_dist(dist) as rt:
        assert https(rt.port, mesh_root, "frontend", "POST", "/charge")[:2] == (200, b"charged")
        assert https(rt.port, mesh_root, "frontend", "GET", "/charge")[:2] == (200, b"looked")
        assert https(rt.port, mesh_root, "payments", "POST", "/refund")[:2] == (200, b"refunded")
        assert https(rt.port, mesh_root, None, "POST", "/refund")[:2] == (200, b"refunded")
        assert len(payments_backend.log) == 4  # every request was forwarded
        for _ in range(30):  # more than the audit log's burst: lines are left out, not counts
            assert https(rt.port, mesh_root, "payments", "POST", "/refund")[0] == 200
        denied = _denied(str(rt.ready["admin"]))
        line = 'meshgen_denied_total{listener="edge",from="%s",to="payments",mode="audit"}'
        assert denied == {line % "frontend": 1.0, line % "payments": 31.0, line % "": 1.0}
        log = rt.log.read_text()
    assert (
        "access audit: listener edge forwarded GET '/charge' from caller 'frontend' on route "
        "pay; verdict: deny (no access rule lets it call service payments)" in log
    )
    assert "from a caller without a certificate on route pay" in log
    logged = len(re.findall("access audit: listener edge forwarded", log))
    assert 3 <= logged <= 33, logged  # the limit itself: tests/unit/test_audit.py


def test_enforce_counts_with_mode_enforce(mesh_root: Path, payments_backend: HTTPServer) -> None:
    """The same spec with access: enforce answers 403 and counts mode="enforce"."""
    dist = _build(mesh_root, payments_backend, "enforce")
    with run_dist(dist) as rt:
        assert https(rt.port, mesh_root, "frontend", "GET", "/charge")[0] == 403
        assert payments_backend.log == []
        denied = _denied(str(rt.ready["admin"]))
    assert denied == {
        'meshgen_denied_total{listener="edge",from="frontend",to="payments",mode="enforce"}': 1.0
    }
