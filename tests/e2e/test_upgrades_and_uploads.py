"""Refused upgrades and slow uploads through `python DIST` (in front of ``hostile_backend.py``).

- An upstream that answers an ``Upgrade`` request without 101 leaves an ordinary HTTP/1.1
  connection: what the client sent next is parsed as requests, with backpressure meanwhile; an
  upgrade request's body is forwarded.
- The route's ``timeout`` (1 s here) counts from the end of the request to the response head; an
  upload, however long, is guarded by ``idle_timeout`` (1 s) only: a throttled upload of a few
  MB that outlasts the timeout succeeds, one that stalls on the client's side gets 408, one the
  endpoint stops reading gets 504.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engines import ENGINES, hostile_engine
from runtime_harness import SERVE_HANDLER, Runtime, hostile_proxy, read_response

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MIB = 1 << 20


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with hostile_proxy(tmp_path_factory.mktemp("uploads"), timeout="1s", idle_timeout="1s") as rt:
        yield rt


def connect(rt: Runtime) -> socket.socket:
    return socket.create_connection((rt.host, rt.port), timeout=10)


UPGRADE = b"%s %s HTTP/1.1\r\nHost: hostile\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"


def statuses(raw: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_a_refused_upgrade_carries_on_as_http(proxy: Runtime) -> None:
    """426 to the upgrade request; the request pipelined behind it is then served on the same
    connection, as HTTP/1.1."""
    with connect(proxy) as s:
        s.sendall(UPGRADE % (b"GET", b"/refuse-upgrade") + b"\r\n"
                  + b"GET /ok/next HTTP/1.1\r\nHost: hostile\r\n\r\n")  # fmt: skip
        first, second = read_response(s), read_response(s)
    assert statuses(first) == [426] and first.endswith(b"refused "), first
    assert statuses(second) == [200] and second.endswith(b"\r\n\r\nnext"), second


def test_an_upgrade_request_with_a_body_sends_the_body(proxy: Runtime) -> None:
    """Its Content-Length body reaches the upstream (which echoes it in the refusal)."""
    with connect(proxy) as s:
        s.sendall(UPGRADE % (b"POST", b"/refuse-upgrade") + b"Content-Length: 5\r\n\r\nhello")
        out = read_response(s)
    assert statuses(out) == [426] and out.endswith(b"refused hello"), out


def test_an_upgrade_request_with_a_chunked_body_is_400(proxy: Runtime) -> None:
    with connect(proxy) as s:
        s.sendall(UPGRADE % (b"POST", b"/refuse-upgrade")
                  + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")  # fmt: skip
        assert s.recv(65536).startswith(b"HTTP/1.1 400 ")


def test_bytes_after_an_upgrade_request_wait_with_backpressure(proxy: Runtime) -> None:
    """While the upstream takes 0.5 s to refuse, the client keeps sending: the proxy stops
    reading (the client can push only what socket buffers hold), then parses what came as
    HTTP/1.1 (here: garbage, so 400 after the 426)."""
    with connect(proxy) as s:
        s.sendall(UPGRADE % (b"GET", b"/refuse-upgrade-slow") + b"\r\n")
        s.setblocking(False)
        sent, junk = 0, b"\x00" * 65536
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline and sent < 256 * MIB:
            try:
                sent += s.send(junk)
            except BlockingIOError:
                time.sleep(0.005)
        s.setblocking(True)
        out = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
    assert sent < 32 * MIB, sent  # the old proxy took all 256 MiB (and held it)
    assert statuses(out)[:1] == [426], out[:200]


def upload(rt: Runtime, path: str, size: int, rate: float, pause_at: int = -1) -> bytes:
    """PUT ``size`` bytes at about ``rate`` bytes/s in 64 KiB pieces (with a 1.5 s pause at
    byte ``pause_at``); the response, or what came before the proxy closed."""
    piece = b"u" * 65536
    with connect(rt) as s:
        s.sendall(b"PUT %s HTTP/1.1\r\nHost: hostile\r\nContent-Length: %d\r\n\r\n"
                  % (path.encode(), size))  # fmt: skip
        start, sent = time.monotonic(), 0
        with contextlib.suppress(OSError):
            while sent < size:
                if sent == pause_at:
                    time.sleep(1.5)
                n = min(len(piece), size - sent)
                s.sendall(piece[:n])
                sent += n
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        try:
            return read_response(s)
        except (ConnectionError, OSError) as exc:
            return repr(exc).encode()


def test_an_upload_longer_than_the_timeout_succeeds(proxy: Runtime) -> None:
    """3 MiB at 1.5 MiB/s: 2 s of upload on a route with a 1 s timeout and a 1 s idle
    timeout; it keeps moving, so it is answered."""
    started = time.monotonic()
    out = upload(proxy, "/count", 3 * MIB, 1.5 * MIB)
    assert time.monotonic() - started > 1.5
    assert statuses(out) == [200] and out.endswith(b"\r\n\r\n%d" % (3 * MIB)), out[-200:]


def test_an_upload_that_stalls_on_the_client_side_is_408(proxy: Runtime) -> None:
    """The client stops sending for 1.5 s mid-body (idle_timeout 1 s): 408, and the
    connection closes (the body is unread)."""
    out = upload(proxy, "/count", 2 * MIB, 8 * MIB, pause_at=MIB)
    assert statuses(out) == [408], out[:300]


def test_an_endpoint_that_stops_reading_the_upload_is_504(proxy: Runtime) -> None:
    """The endpoint stops reading for 3 s: the upload backs up to the client and nothing moves
    for 1 s: 504 (the endpoint's timeout, not the client's)."""
    out = upload(proxy, "/stall-read", 64 * MIB, 1024 * MIB)
    assert statuses(out) == [504], out[:300]


def test_the_timeout_counts_from_the_end_of_the_request(proxy: Runtime) -> None:
    """A short upload, then an endpoint that answers after 1.5 s: 504 at the 1 s timeout."""
    with connect(proxy) as s:
        s.sendall(b"PUT /slow HTTP/1.1\r\nHost: hostile\r\nContent-Length: 2\r\n\r\nhi")
        started = time.monotonic()
        out = read_response(s)
    assert statuses(out) == [504] and 0.9 < time.monotonic() - started < 3, out


STALLER = (
    r"""
import http.server, socket, struct, time
# An endpoint that takes a request's head and, for POST /answer, /reset and /close, none of
# its body: after 0.5 s it answers 200 "early" (and reads on nothing), resets the connection,
# or closes it. GET /ok/NAME: 200 NAME. Its small receive buffer and segments (536 bytes) keep
# the proxy's send buffer towards it small too (loopback's grows to 4 MiB otherwise): the
# proxy's side of an upload fills after 47-87 KiB.
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        name = self.path[4:].encode()
        self.send_response(200)
        self.send_header("content-length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def do_POST(self):
        time.sleep(0.5)
        if self.path == "/answer":
            self.send_response(200)
            self.send_header("content-length", "5")
            self.end_headers()
            self.wfile.write(b"early")
            time.sleep(30)
        elif self.path == "/reset":
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.connection.close()
        self.close_connection = True
    def log_message(self, *a): pass
def server_bind(self, bind=http.server.ThreadingHTTPServer.server_bind):
    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    bind(self)
http.server.ThreadingHTTPServer.server_bind = server_bind
"""
    + SERVE_HANDLER
)


PAUSED_CLIENT = {  # engine, how the endpoint ends: (the answer's status, or None: the
    # connection closed without one; the next request answered at once)
    ("runtime", "/answer"): (200, True),
    ("runtime", "/reset"): (502, True),
    ("runtime", "/close"): (502, True),
    ("haproxy", "/answer"): (200, False),
    ("haproxy", "/reset"): (None, False),
    ("haproxy", "/close"): (None, False),
    ("envoy", "/answer"): (200, False),
    ("envoy", "/reset"): (503, True),
    ("envoy", "/close"): (503, True),
}


@pytest.mark.parametrize("path", ["/answer", "/reset", "/close"])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_client_paused_for_an_endpoint_that_ends_reads_again(
    engine: str, path: str, tmp_path: Path
) -> None:
    """A 192 KiB upload pipelined behind a GET: the proxy holds the whole body while the GET
    is answered, then sends it on the GET's pooled connection to an endpoint that does not
    read it; the proxy's side towards the endpoint fills and the proxy stops reading the
    client. The endpoint then answers early, resets or closes: the runtime answers and reads
    the client's next request on the same connection at once. Without fd18a1a
    (``UpstreamConnection.let_go``) a reset or a close left the runtime's client paused, its
    next request unread until ``client_idle_timeout`` (60 s); the early answer freed it
    already (``go_idle``). HAProxy 2.6 forwards the early answer but leaves the next request
    unanswered (3 s here), and closes the client's connection without an answer on a reset
    or close; Envoy 1.40 leaves the next request after the early answer unanswered too, and
    answers a reset or close 503, then the next request."""
    status, goes_on = PAUSED_CLIENT[engine, path]
    post = b"POST %s HTTP/1.1\r\nHost: hostile\r\nContent-Length: %d\r\n\r\n" % (
        path.encode(), 192 << 10)  # fmt: skip
    first = b"GET /ok/first HTTP/1.1\r\nHost: hostile\r\n\r\n"
    with (
        hostile_engine(engine, tmp_path, STALLER) as e,
        socket.create_connection(("127.0.0.1", e.port), timeout=3.0) as s,
    ):
        s.sendall(first + post + b"x" * (192 << 10))
        assert read_response(s).endswith(b"\r\n\r\nfirst")
        if status is None:
            with pytest.raises(ConnectionError):
                read_response(s)
            return
        assert statuses(read_response(s)) == [status]
        s.sendall(b"GET /ok/next HTTP/1.1\r\nHost: hostile\r\n\r\n")
        if goes_on:
            assert read_response(s).endswith(b"\r\n\r\nnext")
        else:
            with pytest.raises(TimeoutError):
                read_response(s)
