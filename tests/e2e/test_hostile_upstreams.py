"""Hostile upstreams: whatever an endpoint sends, each client gets its own answer or an error.

`python DIST` runs in front of ``hostile_backend.py``, which misbehaves by path (see its
docstring). Every case checks the status the client gets and then that a following request,
on a fresh client connection, gets its own answer (``/ok/NAME`` answers ``NAME``): no byte of a
misbehaving exchange may reach another client, and no broken connection may be reused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engines import ENGINES, hostile_engine
from runtime_harness import Runtime, hostile_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with hostile_proxy(tmp_path_factory.mktemp("hostile"), timeout="5s", idle_timeout="1s") as rt:
        yield rt


def own_answer(rt: Runtime, name: str) -> None:
    """A fresh client gets exactly its own answer (nothing injected, nothing appended)."""
    status, headers, body = rt.request("GET", f"/ok/{name}", "hostile")
    assert (status, body) == (200, name.encode()), (status, headers, body)
    assert "x-injected" not in headers


def answer_and_silence(rt: Runtime, path: str, wait: float = 0.4) -> bytes:
    """One request on a kept-open connection: everything the proxy sends until nothing more
    comes for ``wait`` seconds (its answer, and anything appended to it)."""
    return rt.converse(b"GET %s HTTP/1.1\r\nHost: hostile\r\n\r\n" % path.encode(), wait)[0]


@pytest.mark.parametrize("path", ["/unsolicited", "/unsolicited-head"])
def test_unsolicited_response_on_an_idle_pooled_connection(proxy: Runtime, path: str) -> None:
    """The endpoint answers, then writes (the head of) a second response on the idle
    keep-alive connection: nothing is appended to the first client's answer, the pool drops
    that connection, and the next clients get their own answers, not the injected one."""
    out = answer_and_silence(proxy, path)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\nfirst"), out
    for i in range(3):
        own_answer(proxy, f"after-{path[1:]}-{i}")


def test_two_responses_in_one_packet(proxy: Runtime) -> None:
    """Two responses to one request in one packet: the first is the answer (framed once, by
    its own content-length), the second reaches nobody."""
    status, headers, body = proxy.request("GET", "/two", "hostile")
    assert (status, body) == (200, b"one"), (status, headers, body)
    assert "x-injected" not in headers
    for i in range(3):
        own_answer(proxy, f"after-two-{i}")


# What each engine forwards of ``Connection: keep-alive, X-Hop`` and ``X-Hop: secret`` (measured;
# docs/reliability.md): HAProxy 2.6 drops the keep-alive token only, Envoy drops the Connection
# field but forwards the field it names.
NOMINATED = {
    "runtime": (None, None),
    "haproxy": ("X-Hop", "secret"),
    "envoy": (None, "secret"),
}


@pytest.mark.parametrize("engine", ENGINES)
def test_fields_the_endpoints_connection_lists_are_not_forwarded(
    engine: str, tmp_path: Path
) -> None:
    """RFC 9110 section 7.6.1: ``Connection: keep-alive, X-Hop`` makes X-Hop the endpoint's
    hop's alone; the runtime's client gets neither, and the other fields as sent. HAProxy and
    Envoy forward X-Hop (pinned here as measured)."""
    with hostile_engine(engine, tmp_path) as e:
        status, headers, body = e.request("/nominated", "hostile")
    assert (status, body) == (200, b"ok"), (status, headers, body)
    assert (headers.get("connection"), headers.get("x-hop")) == NOMINATED[engine], headers
    assert headers.get("x-end") == "1", headers


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/endless-head", 502),  # over the listener's request_head_bytes (64 KiB)
        ("/many-headers", 502),  # over request_headers (100)
        ("/1xx-flood", 502),  # interim heads count into the same head limit
        ("/garbage", 502),
        ("/cl-te", 502),
        ("/dup-cl", 502),
        ("/gzip-chunked", 502),  # a coding the proxy would pass on undeclared
        ("/bad-chunk-first", 502),  # nothing was sent to the client yet
        ("/101", 502),  # switching protocols nobody asked for
        ("/status/000", 502),  # three digits llhttp takes, outside 100-599
        ("/status/099", 502),
        ("/status/600", 502),
        ("/status/999", 502),
    ],
)
def test_bad_response_heads_are_502(proxy: Runtime, path: str, status: int) -> None:
    """A response head the proxy cannot frame safely is a 502; the connection is dropped."""
    started = time.monotonic()
    got, headers, body = proxy.request("GET", path, "hostile")
    assert got == status, (got, headers, body)
    assert time.monotonic() - started < 4  # not the 5 s route timeout: refused on arrival
    own_answer(proxy, f"after{path.replace('/', '-')}")


def raw_until_closed(rt: Runtime, path: str, limit: int = 1 << 20) -> bytes:
    """A request on its own connection; what arrives until the proxy closes it (or ``limit``
    bytes came)."""
    out, closed = rt.converse(b"GET %s HTTP/1.1\r\nHost: hostile\r\n\r\n" % path.encode(),
                              limit=limit)  # fmt: skip
    assert closed or len(out) >= limit, out[-200:]
    return out


@pytest.mark.parametrize("path", ["/bad-chunk-late", "/mid-body"])
def test_a_body_broken_after_the_head_closes_the_connection(proxy: Runtime, path: str) -> None:
    """Once the head went out, a broken body is never turned into a late 502 inside the
    stream: the client gets the head, the bytes that were good, and a closed connection."""
    out = raw_until_closed(proxy, path)
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    assert out.count(b"HTTP/1.1") == 1 and b"502" not in out, out
    assert out.endswith(b"3\r\nabc\r\n") or out.endswith(b"0123456789"), out
    own_answer(proxy, f"after{path.replace('/', '-')}")


def test_an_endless_body_streams_until_the_client_leaves(proxy: Runtime) -> None:
    """A body that never ends streams with backpressure; when the client hangs up, the
    upstream connection goes too and the next client gets its own answer."""
    out = raw_until_closed(proxy, "/endless-body", limit=4 << 20)
    assert out.startswith(b"HTTP/1.1 200 ") and len(out) >= 4 << 20
    own_answer(proxy, "after-endless-body")
