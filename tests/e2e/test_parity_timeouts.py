"""Timeout parity over the three engines: ``timeout`` runs from the end of the request to the
response headers, ``idle_timeout`` bounds a gap with no bytes either way (docs/reference.md).

A backend answers at once or after a delay and then streams its body in chunks with gaps. The
runtime follows the definitions. Envoy's route timeout runs until the response is complete and
HAProxy 2.6 has one server inactivity timer for the whole response (set to ``timeout``), so
each of them differs in one scenario, asserted as documented (docs/envoy.md,
docs/haproxy.md).
"""

from __future__ import annotations

import http.client
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from engines import ENGINES, run_engine
from haproxy_harness import Engine, build
from runtime_harness import SERVE_HANDLER, script_backend

pytestmark = pytest.mark.timeout(120)

STREAM_BACKEND = (
    """
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(float(self.headers.get("x-head-delay", "0")))
        chunks, gap = int(self.headers.get("x-chunks", "1")), float(self.headers.get("x-gap", "0"))
        self.send_response(200)
        self.send_header("content-length", str(6 * chunks))
        self.end_headers()
        for i in range(chunks):
            if i:
                time.sleep(gap)
            self.wfile.write(b"chunk\\n")
            self.wfile.flush()
    def log_message(self, *a): pass
"""
    + SERVE_HANDLER
)

SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  short:
    discovery: {{static: [{{address: "{a}"}}]}}
    timeout: 1s
    idle_timeout: 3s
  long:
    discovery: {{static: [{{address: "{a}"}}]}}
    timeout: 5s
    idle_timeout: 1s
routes:
  - name: short
    match: {{host: short.test}}
    to: [{{service: short}}]
  - name: long
    match: {{host: long.test}}
    to: [{{service: long}}]
listeners: [{{name: edge, address: "127.0.0.1:0"}}]
admin: "127.0.0.1:0"
"""


def _fetch(engine: Engine, host: str, headers: dict[str, str]) -> tuple[str, int, float]:
    """(status, chunks of the body received before it ended or was cut, seconds)."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=20)
    try:
        conn.request("GET", "/", headers={"Host": host, **headers})
        resp = conn.getresponse()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        except ConnectionError:
            body = b""
        return str(resp.status), body.count(b"chunk"), time.monotonic() - start
    finally:
        conn.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_timeouts(engine: str, tmp_path: Path) -> None:
    """Headers after `timeout`: 504 everywhere. Then the body: how many of its chunks arrive
    (runtime: by the definitions; Envoy and HAProxy: as documented)."""
    with ExitStack() as stack:
        a, _ = stack.enter_context(script_backend(STREAM_BACKEND))
        e = stack.enter_context(run_engine(engine, build(SPEC.format(a=a), tmp_path / "mesh")))
        status, _, took = _fetch(e, "short.test", {"x-head-delay": "2", "x-chunks": "1"})
        assert status == "504" and 0.9 <= took < 1.9, (status, took)
        # timeout 1s, idle_timeout 3s; 3 chunks 1.5 s apart: gaps within idle_timeout
        short = _fetch(e, "short.test", {"x-chunks": "3", "x-gap": "1.5"})
        # timeout 5s, idle_timeout 1s; 2 chunks 1.6 s apart: a gap beyond idle_timeout
        long = _fetch(e, "long.test", {"x-chunks": "2", "x-gap": "1.6"})
    got = (short[:2], long[:2])
    if engine == "runtime":
        assert got == (("200", 3), ("200", 1)), (short, long)
    elif engine == "envoy":  # the route timeout also bounds the body (documented)
        assert got == (("200", 1), ("200", 1)), (short, long)
    else:  # HAProxy 2.6: one server inactivity timer, set to `timeout` (documented)
        assert got == (("200", 1), ("200", 2)), (short, long)
