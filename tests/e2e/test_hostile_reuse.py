"""Hostile upstreams against connection reuse: after any of these exchanges, a pooled upstream
connection carries no byte of the last exchange into the next one.

`python DIST` (route ``timeout`` 1 s, ``idle_timeout`` 500 ms, the listener's
``client_idle_timeout`` 500 ms) runs in front of
``hostile_backend.py``. Its ``/whoami`` answers with the serial number of the connection it came
on, so a test sees which upstream connection the proxy reused; ``/ok/NAME`` answers ``NAME``.
The cases: an answer that comes before the request body is through, an answer cut short, bytes
after a ``Connection: close`` answer, interim (1xx) responses, bodies where none may be (HEAD,
204, 304), and a trailer section that never ends.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import eventually
from runtime_harness import Runtime, hostile_proxy, read_response

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    folder = tmp_path_factory.mktemp("reuse")
    limits = "{client_idle_timeout: 500ms}"
    with hostile_proxy(folder, timeout="1s", idle_timeout="500ms", limits=limits) as rt:
        yield rt


def get(rt: Runtime, path: str) -> tuple[int, dict[str, str], bytes]:
    return rt.request("GET", path, "hostile")


def whoami(rt: Runtime) -> int:
    """The serial number of the upstream connection the proxy used for this request."""
    status, headers, body = get(rt, "/whoami")
    assert status == 200 and "x-injected" not in headers, (status, headers, body)
    return int(body)


def own_answers(rt: Runtime, name: str) -> None:
    """Fresh clients get exactly their own answers (nothing injected, nothing appended)."""
    for i in range(3):
        status, headers, body = get(rt, f"/ok/{name}-{i}")
        assert (status, body) == (200, f"{name}-{i}".encode()), (status, headers, body)
        assert "x-injected" not in headers


def test_the_pool_reuses_a_clean_connection(proxy: Runtime) -> None:
    """The premise of the tests below: after a clean exchange, the next request goes out on
    the same (most recently used) upstream connection."""
    assert whoami(proxy) == whoami(proxy)


def test_an_answer_before_the_request_body_is_through_is_not_reused(proxy: Runtime) -> None:
    """The endpoint answers (keep-alive) while the request body is still on its way: the
    connection is closed, not pooled (as HAProxy and Envoy do), though the endpoint reads the
    rest of the body; the next request goes out on another connection."""
    pooled = whoami(proxy)
    head = b"POST /early HTTP/1.1\r\nHost: hostile\r\nContent-Length: 10\r\n\r\n"
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
        s.sendall(head + b"01234")
        answer = read_response(s)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"early %d" % pooled)
        s.sendall(b"56789")
    assert whoami(proxy) != pooled
    own_answers(proxy, "after-early")


def test_an_answer_cut_short_then_silence_closes_the_client(proxy: Runtime) -> None:
    """Content-Length 100, 10 bytes, then nothing on an open connection: at the idle timeout
    the client gets its connection closed after the 10 bytes (never a late 502 inside the
    stream), and the upstream connection is not reused."""
    pooled = whoami(proxy)
    started = time.monotonic()
    out, closed = proxy.converse(b"GET /short-idle HTTP/1.1\r\nHost: hostile\r\n\r\n", quiet=5)
    assert closed and 0.4 < time.monotonic() - started < 3, (closed, out)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\n0123456789"), out
    assert whoami(proxy) != pooled
    own_answers(proxy, "after-short-idle")


def test_bytes_after_a_connection_close_answer_reach_nobody(proxy: Runtime) -> None:
    """An answer with ``Connection: close``, then an injected response on the still open
    connection: the client gets the answer, its next request on the same client connection
    gets its own answer, and the upstream connection is gone."""
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    try:
        for path, want in (("/close-then-bytes", b"closing"), ("/ok/same-client", b"same-client")):
            conn.request("GET", path, headers={"Host": "hostile"})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, want)
            assert resp.getheader("x-injected") is None
    finally:
        conn.close()
    own_answers(proxy, "after-close")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/head-body", 200), ("GET", "/204-body", 204), ("GET", "/304-body", 304)],
)
def test_a_body_where_none_may_be_reaches_nobody(
    proxy: Runtime, method: str, path: str, status: int
) -> None:
    """A response to HEAD, a 204 and a 304 each carry a Content-Length and, as body, an
    injected response: the client gets the head alone, its next request on the same client
    connection gets its own answer, and no later request gets the injected one."""
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    try:
        conn.request(method, path, headers={"Host": "hostile"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (status, b"")
        conn.request("GET", "/ok/next", headers={"Host": "hostile"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"next")
        assert resp.getheader("x-injected") is None
    finally:
        conn.close()
    own_answers(proxy, f"after{path.replace('/', '-')}")


def test_interim_responses_before_the_final_one_are_skipped(proxy: Runtime) -> None:
    """103 Early Hints and 100 Continue, then 200: the client gets exactly the 200 (interim
    responses are not forwarded), and the connection is reused for the next request."""
    out, _ = proxy.converse(b"GET /early-hints HTTP/1.1\r\nHost: hostile\r\n\r\n", quiet=0.5)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\nfinal"), out
    assert out.count(b"HTTP/1.1") == 1 and b"link:" not in out.lower(), out
    own_answers(proxy, "after-early-hints")


def test_an_interim_response_with_a_body_is_a_502(proxy: Runtime) -> None:
    """A 150 that carries a Content-Length and a body (llhttp reads one after 1xx other than
    100, 102 and 103): no 1xx may have a body, so the try fails with 502; the body (an
    injected response) never reaches the client as part of the final answer."""
    status, headers, body = get(proxy, "/1xx-body")
    assert status == 502 and b"injected" not in body, (status, headers, body)
    own_answers(proxy, "after-1xx-body")


def test_interim_responses_trickling_for_ever_time_out(proxy: Runtime) -> None:
    """A 100 Continue every 100 ms and never a final response: the route's 1 s timeout
    answers 504 (interim responses do not restart it)."""
    started = time.monotonic()
    status, headers, body = get(proxy, "/1xx-trickle")
    assert status == 504 and time.monotonic() - started < 3, (status, headers, body)
    own_answers(proxy, "after-1xx-trickle")


def test_a_trailer_section_that_never_ends_closes_the_connection(proxy: Runtime) -> None:
    """A chunked answer whose trailer field never ends (bytes keep coming, so the idle timeout
    never fires): past the head limit (64 KiB) the proxy closes both connections instead of
    buffering the field; the client has the head and the one chunk."""
    out, closed = proxy.converse(b"GET /trailer-flood HTTP/1.1\r\nHost: hostile\r\n\r\n", 3)
    assert closed, out[-200:]
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"3\r\nabc\r\n"), out
    own_answers(proxy, "after-trailer-flood")


def proxy_holds(port: int, client_port: int) -> bool:
    """Whether the proxy still holds its end of the connection from ``client_port``: a socket
    on its ``port`` with that peer, ESTABLISHED in /proc/net/tcp (once the proxy closes its
    descriptor the kernel may keep the socket a while, orphaned, in another state)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) == (port, client_port):
            return state == "01"
    return False


def test_a_client_that_stops_reading_is_dropped(proxy: Runtime) -> None:
    """A client asks for an endless body and reads nothing: the upstream is cut at the idle
    timeout (nothing moves), and the client's connection, closed with bytes it never takes,
    is dropped once it made no progress for ``client_idle_timeout`` (a close waited for ever
    before this was fixed: its descriptor and buffers stayed until the client left). The
    proxy's end is looked up in /proc/net/tcp: a count of its descriptors also dropped when
    the pooled upstream connection closed, and so did not show the client's."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((proxy.host, proxy.port))
        s.sendall(b"GET /endless-body HTTP/1.1\r\nHost: hostile\r\n\r\n")
        assert s.recv(1) == b"H"  # the answer began: the exchange is open
        client_port = s.getsockname()[1]
        assert proxy_holds(proxy.port, client_port)
        eventually(lambda: not proxy_holds(proxy.port, client_port), timeout=4,
                   what="the proxy's end of the connection gone")  # fmt: skip
    own_answers(proxy, "after-unread")
