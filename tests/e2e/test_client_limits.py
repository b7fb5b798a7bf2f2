"""What a client may send (`listeners[].limits`) and how the proxy refuses the rest.

`python DIST` with small limits on its listener (4 KiB head, 20 headers, 1 KiB URL) in front of
an echo backend. Each refusal has its status (414, 431, 400, 501, 505), closes the connection,
is counted in `meshgen_connections_rejected_total{listener,reason}` and never reaches the
backend; a valid request before the refused bytes is answered first.
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
from runtime_harness import (
    Runtime,
    backend,
    build_dist,
    converse,
    read_response,
    run_dist,
    spec,
)
from test_proxy_semantics import count, samples

from meshgen.runtime.codec.http1 import MAX_PIPELINED

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

LIMITS = "{request_head_bytes: 4096, request_headers: 20, url_bytes: 1024}"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with backend("web") as (web, _):
        text = spec(
            f"""
            services:
              web: {{discovery: {{static: [{{address: "{web}"}}]}}}}
            routes:
              - {{name: web, match: {{host: web}}, to: [{{service: web}}]}}
            """
        ).replace('address: "127.0.0.1:0"}', f'address: "127.0.0.1:0", limits: {LIMITS}}}', 1)
        dist = build_dist(tmp_path_factory.mktemp("limits") / "dist", text)
        with run_dist(dist) as rt:
            yield rt


def rejected(rt: Runtime, reason: str) -> float:
    return count(rt, "meshgen_connections_rejected_total", listener="edge", reason=reason)


def forwarded(rt: Runtime) -> float:
    return sum(value for _, value in samples(rt, "meshgen_upstream_requests_total"))


def statuses(raw: bytes) -> list[int]:
    """The status of every response in ``raw`` (the echo bodies hold no status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


GET = b"GET /%s HTTP/1.1\r\nHost: web\r\n"


REFUSED = [
    (b"GET /" + b"u" * 1100 + b" HTTP/1.1\r\nHost: web\r\n\r\n", 414, "url_bytes"),
    (GET % b"big" + b"x-big: " + b"v" * 5000 + b"\r\n\r\n", 431, "request_head_bytes"),
    (GET % b"many" + b"x-h: v\r\n" * 21 + b"\r\n", 431, "request_headers"),
    (GET % b"te" + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "bad_request"),
    (GET % b"te2" + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "bad_request"),
    (b"GET /nine\r\n\r\n", 400, "bad_request"),  # HTTP/0.9
    (b"GET /two HTTP/2.0\r\nHost: web\r\n\r\n", 505, "bad_request"),
    (b"GET /port HTTP/1.1\r\nHost: web:99999\r\n\r\n", 400, "bad_request"),
]  # fmt: skip
REFUSED_IDS = ["url", "head-bytes", "header-count", "gzip-chunked", "chunked-twice", "http-0.9",
               "http-2.0", "port-99999"]  # fmt: skip


@pytest.mark.parametrize(("request_bytes", "status", "reason"), REFUSED, ids=REFUSED_IDS)
def test_refused_requests(proxy: Runtime, request_bytes: bytes, status: int, reason: str) -> None:
    """Each refusal: its status, the connection closed, counted, nothing forwarded."""
    before, sent = rejected(proxy, reason), forwarded(proxy)
    out, closed = proxy.converse(request_bytes + GET % b"after" + b"\r\n")
    assert statuses(out) == [status] and closed, out[:300]
    assert rejected(proxy, reason) == before + 1
    assert forwarded(proxy) == sent


def test_limits_hold_exactly(proxy: Runtime) -> None:
    """A head of exactly 20 headers and a URL of exactly 1024 bytes are served."""
    url = b"/" + b"u" * 1023
    head = b"GET %s HTTP/1.1\r\nHost: web\r\n" % url + b"x-h: v\r\n" * 18 + b"Connection: close\r\n"
    out, _ = proxy.converse(head + b"\r\n")
    assert statuses(out) == [200], out[:300]


def endless(port: int, start: bytes, piece: bytes) -> tuple[int, bytes]:
    """Send ``start``, then ``piece`` after ``piece`` until the proxy answers (10 s at most):
    the bytes of ``piece`` it took, and the first read of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(start)
        s.setblocking(False)
        sent, out = 0, b""
        deadline = time.monotonic() + 10
        while not out and time.monotonic() < deadline:
            # (closed: its answer may still be in the socket)
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                sent += s.send(piece)
            try:
                out = s.recv(65536)
            except BlockingIOError:
                time.sleep(0.001)
            except ConnectionResetError:
                break
    return sent, out


def test_an_endless_header_line_is_refused_early(proxy: Runtime) -> None:
    """A header value sent 1 KiB at a time without end: 431 once the head passes the limit,
    after at most one read more (never the quadratic re-parse of the growing line)."""
    before = rejected(proxy, "request_head_bytes")
    sent, out = endless(proxy.port, GET % b"endless" + b"x-endless: ", b"a" * 1024)
    assert statuses(out) == [431], out[:200]
    assert sent < 4096 + 512 * 1024, sent
    assert rejected(proxy, "request_head_bytes") == before + 1


def test_garbage_after_a_valid_request(proxy: Runtime) -> None:
    """The request that arrived whole is forwarded and answered; the garbage after it gets
    its 400 afterwards, and the connection closes."""
    sent = forwarded(proxy)
    out, closed = proxy.converse(GET % b"valid" + b"\r\n" + b"\x00\x01garbage\r\n\r\n")
    assert statuses(out) == [200, 400] and closed, out
    assert b"web GET /valid\n" in out
    assert forwarded(proxy) == sent + 1


def test_pipelined_request_over_a_limit_after_a_valid_one(proxy: Runtime) -> None:
    """A valid request, then one with an over-long URL: 200 first, then 414."""
    out, closed = proxy.converse(GET % b"first" + b"\r\nGET /" + b"u" * 1100 + b" HTTP/1.1\r\n")
    assert statuses(out) == [200, 414] and closed, out


@pytest.mark.parametrize(
    "first",
    [GET % b"close" + b"Connection: close\r\n\r\n", b"GET /ten HTTP/1.0\r\nHost: web\r\n\r\n"],
    ids=["connection-close", "http-1.0"],
)
def test_bytes_after_the_last_request_are_ignored(proxy: Runtime, first: bytes) -> None:
    """After a request that ends the connection, whatever follows is not answered (no 400
    in place of the response of the request that ran)."""
    out, closed = proxy.converse(first + b"GET /more HTTP/1.1\r\nHost: web\r\n\r\n\x00junk")
    assert statuses(out) == [200] and closed, out


def test_http_1_0_keep_alive(proxy: Runtime) -> None:
    """An HTTP/1.0 request that asks to keep the connection gets `Connection: keep-alive` in
    its answer, and the connection serves the next request."""
    one = b"GET /a HTTP/1.0\r\nHost: web\r\nConnection: keep-alive\r\n\r\n"
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
        s.sendall(one)
        first = read_response(s)
        assert statuses(first) == [200] and b"\r\nconnection: keep-alive\r\n" in first.lower()
        s.sendall(b"GET /b HTTP/1.0\r\nHost: web\r\n\r\n")
        second = read_response(s)
        assert statuses(second) == [200] and b"web GET /b" in second
        assert b"\r\nconnection: close\r\n" in second.lower() and s.recv(100) == b""


# What each engine answers to a chunked body whose trailer section never ends (measured:
# HAProxy 2.6 refuses it with 400 at once, Envoy with 431 within about a second).
TRAILER_REFUSAL = {"runtime": 431, "haproxy": 400, "envoy": 431}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("piece", [b"t" * 1024, b"x-t: v\r\n" * 128], ids=["one-field", "fields"])
def test_an_endless_trailer_section_is_refused(engine: str, piece: bytes, tmp_path: Path) -> None:
    """A chunked upload whose trailer section never ends (one endless field, or fields without
    end) to an endpoint that waits for the whole body: refused once it passes the head limit
    (the runtime's default 64 KiB), after at most one read more. Before, the runtime buffered
    the field being read (llhttp) or kept every field, without limit: 24 MiB sent in 4 s grew
    it by 34 MiB or 200 MiB, with no answer and no close."""
    with hostile_engine(engine, tmp_path) as e:
        head = b"POST /count HTTP/1.1\r\nHost: hostile\r\nTransfer-Encoding: chunked\r\n\r\n"
        sent, out = endless(e.port, head + b"5\r\nhello\r\n0\r\nx-t: ", piece)
    assert statuses(out) == [TRAILER_REFUSAL[engine]], out[:200]
    if engine == "runtime":
        assert sent < 64 * 1024 + 512 * 1024, sent


def test_trailer_fields_never_become_header_fields(proxy: Runtime) -> None:
    """A pipelined chunked request arrives whole, trailer section included, while the request
    before it is answered: its trailer field is not forwarded, and never as a header field
    (RFC 9110 section 6.5.1; it was, appended to the head the endpoint got, before this was
    fixed: a field a front end checks in heads could ride in a trailer)."""
    first = GET % b"first" + b"\r\n"
    second = (b"POST /second HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n"
              b"Connection: close\r\n\r\n2\r\nhi\r\n0\r\nx-env: trailer\r\n\r\n")  # fmt: skip
    out, _ = proxy.converse(first + second)
    assert statuses(out) == [200, 200], out[:600]
    assert b"POST /second" in out and b"echo-x-env" not in out, out


# What each engine does with 300 GETs pipelined in one write (measured: HAProxy 2.6 and Envoy
# 1.40 parse one request at a time from a bounded buffer and answer them all).
PIPELINED_ANSWERED = {"runtime": MAX_PIPELINED + 1, "haproxy": 300, "envoy": 300}


@pytest.mark.parametrize("engine", ENGINES)
def test_requests_pipelined_past_the_limit(engine: str, tmp_path: Path) -> None:
    """300 GETs in one write, one read for the proxy: the runtime answers the one it serves
    and MAX_PIPELINED waiting behind it, then 429 and closes. Before, llhttp's whole read
    was queued: ~9,000 requests of one 256 KiB read, ~2 MB per connection, without limit on
    the count."""
    with hostile_engine(engine, tmp_path) as e:
        out, closed = converse(e.port, b"GET /ok/p HTTP/1.1\r\nHost: hostile\r\n\r\n" * 300)
    answered = PIPELINED_ANSWERED[engine]
    if engine == "runtime":
        assert statuses(out) == [200] * answered + [429] and closed, statuses(out)
    else:
        assert statuses(out) == [200] * answered, statuses(out)


def test_pipelined_requests_up_to_the_limit_are_all_answered(proxy: Runtime) -> None:
    """MAX_PIPELINED + 1 GETs in one write (the one served, and the most that may wait): all
    answered, none refused; the one more of the test above is counted."""
    before = rejected(proxy, "pipelined_requests")
    out, closed = proxy.converse((GET % b"p" + b"\r\n") * (MAX_PIPELINED + 1), quiet=2.0)
    assert statuses(out) == [200] * (MAX_PIPELINED + 1) and not closed, statuses(out)
    out, closed = proxy.converse((GET % b"p" + b"\r\n") * (MAX_PIPELINED + 2))
    assert statuses(out) == [200] * (MAX_PIPELINED + 1) + [429] and closed, statuses(out)
    assert rejected(proxy, "pipelined_requests") == before + 1


def half_closed(port: int, data: bytes) -> bytes:
    """Send ``data``, then shut down the sending side (``shutdown(SHUT_WR)``, as ``nc -N``):
    everything that came back until the proxy closed (5 s at most)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
    return out


# What each engine answers to a GET the endpoint answers after 1.5 s, its client having shut its
# sending side (measured: HAProxy 2.6 waits and answers, as without `option abortonclose`; Envoy
# 1.40 closes at once, as the runtime does).
HALF_CLOSE_ANSWERS = {"runtime": [], "haproxy": [200], "envoy": []}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_half_close_ends_the_request_at_once(engine: str, tmp_path: Path) -> None:
    """The runtime cannot tell a client's half-close (``nc -N``) from its close: either ends the
    request at once, so a client that hangs up holds no endpoint's work until the route
    timeout (docs/reliability.md)."""
    with hostile_engine(engine, tmp_path) as e:
        start = time.monotonic()
        out = half_closed(e.port, b"GET /slow HTTP/1.1\r\nHost: hostile\r\n\r\n")
        took = time.monotonic() - start
    assert statuses(out) == HALF_CLOSE_ANSWERS[engine], out[:400]
    assert (took < 1.0) == (engine != "haproxy"), took
