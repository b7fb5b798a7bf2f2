"""One scenario set, three drivers of the request machine: identical requests at the endpoints,
identical metrics.

The same mesh and the same requests go through ``python DIST`` (the callback fast path), through
``python DIST --no-fast-path`` (every request in the coroutine driver) and through the
in-process client (``Mesh.request``). A recording backend keeps every request it receives,
byte for byte (request line, header lines in order, body), per scenario. The endpoints must see
exactly the same requests from all three, and the three must count the same in
``meshgen_requests_total``, ``meshgen_upstream_requests_total``, ``meshgen_retries_total``,
``meshgen_rate_limited_total`` and the request-duration histograms' counts (the proxy's
``listener="edge"`` is the client's ``listener=""``). Every service has one endpoint, or
hashes, so no balancer choice is random.
"""

from __future__ import annotations

import http.client
import re
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from polling import eventually
from ports import refused_port
from runtime_harness import build_dist, compile_tables, run_dist, spec

from meshgen.runtime import Mesh
from meshgen.runtime.app.client import MeshError

pytestmark = pytest.mark.e2e

Seen = tuple[str, bytes, tuple[tuple[bytes, bytes], ...], bytes]  # backend, line, headers, body


@dataclass
class Recorder:
    """What every backend received, and how often each request id came (for ``x-answer``)."""

    seen: list[Seen] = field(default_factory=list)
    tries: dict[bytes, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _serve(name: str, rec: Recorder, sock: socket.socket) -> None:
    """One keep-alive connection: record each request, answer as its headers ask: ``x-answer``
    is the status of each try of its request id (``503,200``), ``x-delay`` seconds to wait."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        line, *rows = head.split(b"\r\n")
        headers = tuple(tuple(r.split(b": ", 1)) for r in rows)
        named = {k.lower(): v for k, v in headers}
        length = int(named.get(b"content-length", b"0"))
        while len(buf) < length:
            buf += sock.recv(65536)
        body, buf = buf[:length], buf[length:]
        rid = named.get(b"x-request-id", b"")
        with rec.lock:
            rec.seen.append((name, line, headers, body))  # type: ignore[arg-type]
            n = rec.tries[rid] = rec.tries.get(rid, 0) + 1
        answers = named.get(b"x-answer", b"200").split(b",")
        status = int(answers[min(n, len(answers)) - 1])
        time.sleep(float(named.get(b"x-delay", b"0")))
        out = b"%s %s" % (name.encode(), line)
        sock.sendall(
            b"HTTP/1.1 %d X\r\ncontent-length: %d\r\nx-backend: %s\r\nserver: rec\r\n\r\n%s"
            % (status, len(out), name.encode(), out)
        )


@contextmanager
def backend(name: str, rec: Recorder) -> Iterator[str]:
    """A recording backend on a port of its own; yields its address."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            _serve(name, rec, self.request)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


MESH = """
services:
  api: {{discovery: {{static: [{{address: "{api}"}}]}}}}
  items: {{discovery: {{static: [{{address: "{items}"}}]}}}}
  flaky:
    discovery: {{static: [{{address: "{flaky}"}}]}}
    retries: {{attempts: 2, on: [5xx], backoff: {{base: 1ms, max: 2ms}}}}
  slow:
    discovery: {{static: [{{address: "{slow}"}}]}}
    timeout: 300ms
  dead:
    discovery: {{static: [{{address: "127.0.0.1:{dead}"}}]}}
    retries: {{attempts: 1, on: [connect-failure], backoff: {{base: 1ms, max: 2ms}}}}
  shadow: {{discovery: {{static: [{{address: "{shadow}"}}]}}}}
  hashed:
    discovery: {{static: [{{address: "{h1}"}}, {{address: "{h2}"}}]}}
    load_balancer: {{policy: ring_hash, hash_on: {{header: x-user}}}}
routes:
  - name: items
    match: {{host: shop, path_prefix: /v1/}}
    to: [{{service: items}}]
    rewrite: {{path_prefix: /internal/, host: items.internal}}
    headers:
      request: {{set: {{x-env: prod}}, remove: [x-debug]}}
      response: {{set: {{x-served-by: meshgen}}}}
  - name: limited
    match: {{host: shop, path_prefix: /limited}}
    to: [{{service: api}}]
    rate_limit: {{requests_per_second: 1, burst: 1}}
  - name: faulty
    match: {{host: shop, path_prefix: /fault}}
    to: [{{service: api}}]
    fault: {{abort: {{status: 503, percent: 100}}}}
  - name: moved
    match: {{host: shop, path_prefix: /old}}
    redirect: {{location: "https://new.example/", status: 301}}
  - name: mirrored
    match: {{host: shop, path_prefix: /mirror}}
    to: [{{service: api}}]
    mirror: {{service: shadow, percent: 100}}
  - name: hdr
    match: {{host: shop, path_prefix: /, headers: {{x-beta: {{exact: "1"}}}}}}
    to: [{{service: items}}]
  - {{name: flaky, match: {{host: flaky}}, to: [{{service: flaky}}]}}
  - {{name: slow, match: {{host: slow}}, to: [{{service: slow}}]}}
  - {{name: dead, match: {{host: dead}}, to: [{{service: dead}}]}}
  - {{name: hashed, match: {{host: hashed}}, to: [{{service: hashed}}]}}
  - {{name: api, match: {{host: shop}}, to: [{{service: api}}]}}
"""


@dataclass(frozen=True)
class Call:
    method: str
    host: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    copies: int = 0  # mirrored copies the scenario makes (waited for)


SCENARIOS = (
    Call("GET", "shop", "/v1/items?q=2", (("x-debug", "1"), ("x-forwarded-for", "10.1.1.1"))),
    Call("POST", "shop", "/orders", (("content-type", "application/json"),), b'{"n": 1}'),
    Call("GET", "shop", "/limited"),
    Call("GET", "shop", "/limited"),  # over the burst: 429
    Call("GET", "shop", "/fault"),
    Call("GET", "shop", "/old/x"),
    Call("PUT", "shop", "/mirror/m", (), b"copied", copies=1),
    Call("GET", "shop", "/beta", (("x-beta", "1"), ("connection", "x-hop"), ("x-hop", "a"))),
    Call("GET", "nowhere", "/"),
    Call("GET", "flaky", "/f", (("x-answer", "503,503,200"),)),
    Call("GET", "flaky", "/g", (("x-answer", "500"),)),  # retries run out: the last 500 passes
    Call("GET", "slow", "/s", (("x-delay", "1"),)),  # 504 after 300 ms
    Call("GET", "dead", "/d"),  # connect failures: 503
    Call("GET", "hashed", "/h", (("x-user", "jason"),)),
    Call("GET", "hashed", "/h", (("x-user", "maria"),)),
    Call("GET", "hashed", "/h", (("x-user", "jason"),)),
)


def _wire(call: Call, rid: str) -> bytes:
    lines = [f"{call.method} {call.target} HTTP/1.1", f"host: {call.host}"]
    lines += [f"{k}: {v}" for k, v in call.headers]
    lines.append(f"x-request-id: {rid}")
    if call.body:
        lines.append(f"content-length: {len(call.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + call.body


def _through_proxy(port: int, call: Call, rid: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(_wire(call, rid))
        resp = http.client.HTTPResponse(s)
        resp.begin()
        resp.read()
        return resp.status


def _through_client(mesh: Mesh, call: Call, rid: str) -> int:
    headers = dict(call.headers) | {"x-request-id": rid}
    try:
        return mesh.request(
            call.method, f"http://{call.host}{call.target}", headers, call.body
        ).status
    except MeshError as exc:
        return exc.status


_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_FAMILIES = (
    "meshgen_requests_total",
    "meshgen_upstream_requests_total",
    "meshgen_retries_total",
    "meshgen_rate_limited_total",
    "meshgen_request_duration_seconds_count",
)


def _counts(text: str) -> dict[object, float]:
    """The compared series, without the listener label (the client has none)."""
    out: dict[object, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m[1] not in _FAMILIES:
            continue
        labels = tuple((k, v) for k, v in re.findall(r'(\w+)="([^"]*)"', m[2]) if k != "listener")
        out[(m[1], labels)] = float(m[3])
    return out


def _run(kind: str, tmp_path: Path, rec: Recorder, text: str) -> tuple[list[int], str]:
    """Every scenario through one driver: the statuses and the metrics text."""
    statuses: list[int] = []

    def each(send: object) -> None:
        copies = 0
        for n, call in enumerate(SCENARIOS):
            statuses.append(send(call, f"{kind}-{n}"))  # type: ignore[operator]
            copies += call.copies  # the copies so far have arrived before the next scenario
            eventually(lambda n=copies: sum(1 for s in rec.seen if s[0] == "shadow") >= n)

    if kind == "client":
        mesh = Mesh(compile_tables(text, tmp_path / kind), tmp_path)
        try:
            each(lambda call, rid: _through_client(mesh, call, rid))
            return statuses, mesh.metrics.render()
        finally:
            mesh.close()
    args = ("--no-fast-path",) if kind == "coroutine" else ()
    with run_dist(build_dist(tmp_path / kind / "dist", text), *args) as rt:
        each(lambda call, rid: _through_proxy(rt.port, call, rid))
        return statuses, rt.admin("/metrics")


def test_proxy_coroutine_and_client_send_and_count_alike(tmp_path: Path) -> None:
    names = ("api", "items", "flaky", "slow", "shadow", "h1", "h2")
    runs: dict[str, tuple[list[int], dict[object, float], list[Seen]]] = {}
    rec = Recorder()
    with ExitStack() as stack:  # the same endpoints for every run (a hash ring hashes them)
        addrs = {n: stack.enter_context(backend(n, rec)) for n in names}
        dead = stack.enter_context(refused_port())
        text = spec(MESH.format(dead=dead, **addrs))
        for kind in ("proxy", "coroutine", "client"):
            (tmp_path / kind).mkdir()
            rec.seen.clear()
            statuses, metrics = _run(kind, tmp_path, rec, text)
            seen = sorted(
                (name, line, _normal(headers, kind), body) for name, line, headers, body in rec.seen
            )
            runs[kind] = (statuses, _counts(metrics), seen)
    proxy, coroutine, client = runs["proxy"], runs["coroutine"], runs["client"]
    assert proxy[0] == [200, 200, 200, 429, 503, 301, 200, 200, 404, 200, 500, 504, 503] + [200] * 3
    assert coroutine[0] == proxy[0] and client[0] == proxy[0]
    assert coroutine[2] == proxy[2]
    assert client[2] == proxy[2]
    assert coroutine[1] == proxy[1]
    assert client[1] == proxy[1]
    # What the drift was about: the rewrite and the header operations reach the endpoint.
    items = [s for s in proxy[2] if s[1].startswith(b"GET /internal/items")]
    assert len(items) == 1 and (b"x-env", b"prod") in items[0][2]
    jason = {s[0] for s in proxy[2] if (b"x-user", b"jason") in s[2]}
    assert len(jason) == 1  # the same key, the same endpoint


def _normal(headers: tuple[tuple[bytes, bytes], ...], kind: str) -> tuple[tuple[bytes, bytes], ...]:
    """The run's request ids without the run's name."""
    out = []
    for k, v in headers:
        if k == b"x-request-id":
            v = v.replace(kind.encode(), b"RUN")
        out.append((k, v))
    return tuple(out)
