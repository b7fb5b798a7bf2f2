"""The callback fast path (``forward/fastpath.py``), in process against a real backend.

The proxy runs in this process (real sockets on 127.0.0.1, real compiled tables) so a test can
count which path served a request: the fast path calls neither ``Proxy.handle`` (the coroutine
per request) nor ``ProxyAttempt.drive`` (the coroutine loop) unless it hands a request over.
The backend is a small asyncio server answering by path: ``/ok`` 200; ``/flaky`` 503 on every
odd call, 200 on even ones; ``/slow`` answers after 0.3 s; ``/stream`` a chunked body in two
writes; ``/close`` 200 with ``connection: close``; ``/arm-drop`` 200, then that connection hangs
up on its next request.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from polling import eventually_async
from runtime_harness import compile_tables, spec

from meshgen.runtime.codec.http1 import Request
from meshgen.runtime.forward.fastpath import ProxyAttempt
from meshgen.runtime.forward.generation import Generation
from meshgen.runtime.forward.proxy import Proxy
from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.upstream.upstreams import Upstreams

pytestmark = pytest.mark.e2e


class Backend(asyncio.Protocol):
    """Answers each request head by its path (requests here have no body)."""

    calls: ClassVar[dict[str, int]] = {}
    last_head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.drop_next = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].decode()
            Backend.last_head = head.lower()
            if self.drop_next:  # the stale keep-alive connection: hang up without an answer
                self.transport.close()
                return
            self.drop_next = path == "/arm-drop"
            n = self.calls[path] = self.calls.get(path, 0) + 1
            self.answer(path, n)

    def answer(self, path: str, n: int) -> None:
        t = self.transport
        if path == "/flaky" and n % 2 == 1:
            t.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
        elif path == "/slow":
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, t.write, b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate")
        elif path == "/stream":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            asyncio.get_running_loop().call_later(0.05, t.write, b"6\r\n world\r\n0\r\n\r\n")
        elif path == "/close":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            t.close()
        else:
            body = f"{path} {n}".encode()
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


class Counted:
    """How many requests went through the coroutine handler, and how many the fast path handed
    over to the coroutine loop (``forwarded``)."""

    def __init__(self, proxy: Proxy) -> None:
        self.handled = 0
        self.forwarded = 0
        self.port = 0  # the proxy's listening port, for scenarios that open another connection
        handle, drive = proxy.handle, ProxyAttempt.drive

        async def counted_handle(req: Request) -> None:
            self.handled += 1
            await handle(req)

        def counted_drive(att: ProxyAttempt, action: int) -> Awaitable[None]:
            self.forwarded += 1
            return drive(att, action)

        proxy.handle = counted_handle  # type: ignore[method-assign]
        self.restore = lambda: setattr(ProxyAttempt, "drive", drive)
        ProxyAttempt.drive = counted_drive  # type: ignore[method-assign]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    else:
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readline(), 5)).strip(), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), 5)
            if size == 0:
                break
            body += chunk[:-2]
    return status, headers, body


Scenario = Callable[[Proxy, Counted, Callable[..., Awaitable[Any]]], Awaitable[None]]


def _run(tmp_path: Path, services: str, scenario: Scenario) -> None:
    async def main() -> None:
        Backend.calls = {}
        loop = asyncio.get_running_loop()
        backend = await loop.create_server(Backend, "127.0.0.1", 0)
        port = backend.sockets[0].getsockname()[1]
        tables = compile_tables(spec(services.replace("PORT", str(port))), tmp_path)
        metrics = Metrics()
        upstreams = Upstreams(tables, metrics=metrics)
        await upstreams.start()
        gen = Generation(tables, upstreams, metrics, None, random.Random(7))
        proxy = Proxy(gen, metrics)
        counted = Counted(proxy)
        server = await loop.create_server(proxy.protocol(tables.listeners[0]), "127.0.0.1", 0)
        counted.port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", counted.port)

        async def get(path: str, host: str = "api", extra: str = "", also: int = 0) -> Any:
            """GET ``path``; with ``also``, that many more in the same write (pipelined)."""
            head = f"GET {path} HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n".encode()
            writer.write(head * (1 + also))
            answers = [await _read_response(reader) for _ in range(1 + also)]
            return answers[0] if not also else answers

        try:
            await scenario(proxy, counted, get)
        finally:
            counted.restore()
            writer.close()
            server.close()
            backend.close()
            proxy.exchange.pool.close()
            await upstreams.stop()

    asyncio.run(main())


SERVICES = """
services:
  api:
    discovery: {static: [{address: "127.0.0.1:PORT"}]}
    retries: {attempts: 2, on: [5xx], backoff: {base: 1ms, max: 2ms}}
    timeout: 150ms
"""


def _series(metrics: Metrics, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.render().splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_simple_requests_take_the_fast_path(tmp_path: Path) -> None:
    """After the first request (which opens the upstream connection in the coroutine), keep-alive
    GETs never reach ``handle`` or ``forward``, and everything observable is still there."""

    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        status, headers, body = await get("/ok")
        assert (status, body) == (200, b"/ok 1")
        assert counted.handled == 0 and counted.forwarded == 1  # connect: handed over
        for i in range(2, 12):
            status, headers, body = await get("/ok", extra="x-request-id: abc\r\n")
            assert (status, body) == (200, f"/ok {i}".encode())
            assert b"\r\nx-request-id: abc" in Backend.last_head
            assert b"\r\nx-forwarded-for: 127.0.0.1" in Backend.last_head
            assert "via" in headers
        assert counted.handled == 0 and counted.forwarded == 1
        m = proxy.metrics
        assert _series(m, "meshgen_requests_total", service="api", code="200") == 11
        assert _series(m, "meshgen_request_duration_seconds_count", service="api") == 11
        assert _series(m, "meshgen_upstream_requests_total", service="api") == 11
        assert proxy.generation.in_flight == 0
        # A local answer (no route: 404) is written from the callback too.
        status, _, body = await get("/ok", host="nowhere")
        assert status == 404 and b"nowhere" in body
        assert counted.handled == 0 and counted.forwarded == 1
        assert _series(m, "meshgen_requests_total", route="", code="404") == 1

    _run(tmp_path, SERVICES, scenario)


def test_a_retryable_503_on_the_fast_path_is_retried(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        await get("/ok")  # opens the pooled connection
        before = counted.forwarded
        status, _, body = await get("/flaky")
        assert (status, body) == (200, b"/flaky 2")
        assert counted.forwarded == before + 1  # the retry went on in the coroutine
        assert _series(proxy.metrics, "meshgen_retries_total", service="api") == 1
        assert _series(proxy.metrics, "meshgen_upstream_requests_total", code="503") == 1
        assert _series(proxy.metrics, "meshgen_requests_total", code="200") == 2
        assert counted.handled == 0

    _run(tmp_path, SERVICES, scenario)


def test_fast_path_timeout_is_504_and_a_streamed_body_is_piped(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        await get("/ok")
        status, _, _ = await get("/slow")  # 150 ms timeout; the retry times out too
        assert status == 504
        assert _series(proxy.metrics, "meshgen_requests_total", code="504") == 1
        status, _, body = await get("/stream")  # fresh connection: the others were aborted
        assert (status, body) == (200, b"hello world")
        status, _, body = await get("/stream")  # pooled: fast path, body streams in a task
        assert (status, body) == (200, b"hello world")
        status, _, body = await get("/ok")
        assert status == 200
        assert counted.handled == 0
        assert proxy.generation.in_flight == 0

    _run(tmp_path, SERVICES, scenario)


def test_a_stale_pooled_connection_is_retried_on_a_fresh_one(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        await get("/ok")
        status, _, body = await get("/close")  # the backend closes after answering
        assert (status, body) == (200, b"ok")
        status, _, body = await get("/ok")
        assert status == 200 and re.fullmatch(rb"/ok \d", body)
        await get("/arm-drop")
        before = counted.forwarded
        status, _, body = await get("/ok")  # the pooled connection hangs up: a free retry
        assert status == 200 and re.fullmatch(rb"/ok \d", body)
        assert counted.forwarded == before + 1
        assert _series(proxy.metrics, "meshgen_retries_total", service="api") == 0
        assert _series(proxy.metrics, "meshgen_upstream_requests_total", code="reset") == 0

    _run(tmp_path, SERVICES, scenario)


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        await get("/ok")
        # Four requests in one write: the first takes the fast path, the rest queue behind it
        # for the coroutine; the answers come back in order.
        answers = await get("/p", also=3)
        assert [(s, b) for s, _, b in answers] == [(200, b"/p %d" % i) for i in range(1, 5)]
        assert counted.handled == 3
        status, _, body = await get("/p")  # and the next one is fast again
        assert (status, body) == (200, b"/p 5") and counted.handled == 3

    _run(tmp_path, SERVICES, scenario)


def test_circuit_breaker_pending_queue_falls_back_to_the_coroutine(tmp_path: Path) -> None:
    services = SERVICES + "    circuit_breaker: {max_connections: 1, max_pending_requests: 1}\n"

    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        assert (await get("/ok"))[0] == 200
        before = counted.forwarded
        breaker = proxy.generation.breakers["api"]
        assert breaker.admit() is None  # "another request" holds the only slot
        asyncio.get_running_loop().call_later(0.05, breaker.release)
        status, _, body = await get("/ok")  # waits in the pending queue, then goes
        assert (status, body) == (200, b"/ok 2")
        assert counted.forwarded == before + 1 and counted.handled == 0

    _run(tmp_path, services, scenario)


def test_circuit_breaker_overflow_on_the_fast_path_is_503(tmp_path: Path) -> None:
    services = SERVICES + "    circuit_breaker: {max_connections: 4, max_requests: 1}\n"

    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        assert (await get("/ok"))[0] == 200
        breaker = proxy.generation.breakers["api"]
        assert breaker.admit() is None
        try:
            status, headers, _ = await get("/ok")
        finally:
            breaker.release()
        assert status == 503 and headers.get("x-meshgen-overloaded") == "true"
        assert _series(proxy.metrics, "meshgen_requests_total", code="503") == 1
        assert (await get("/ok"))[0] == 200
        assert counted.handled == 0

    _run(tmp_path, services, scenario)


def test_a_keep_alive_connection_is_idle_after_a_fast_path_request(tmp_path: Path) -> None:
    """Drain closes an idle keep-alive connection at once, also when its last request took the
    fast path (otherwise SIGTERM would wait out the whole grace period)."""

    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        for _ in range(2):
            assert (await get("/ok"))[0] == 200
        assert counted.forwarded == 1  # the second request took the fast path
        (conn,) = proxy.connections
        assert conn.idle
        proxy.start_drain()
        await eventually_async(lambda: conn.closed, timeout=1, what="the idle connection closed")

    _run(tmp_path, SERVICES, scenario)


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_client_that_hangs_up_is_not_replayed(tmp_path: Path, method: str) -> None:
    """A client that disconnects while its request waits on a pooled upstream connection aborts
    that try; the abort is not taken for a stale connection, so the backend sees it once."""

    async def scenario(proxy: Proxy, counted: Counted, get: Any) -> None:
        await get("/ok")  # a pooled connection for the next request to reuse
        _, writer = await asyncio.open_connection("127.0.0.1", counted.port)
        length = "content-length: 0\r\n" if method == "POST" else ""
        writer.write(f"{method} /slow HTTP/1.1\r\nhost: api\r\n{length}\r\n".encode())
        await eventually_async(lambda: Backend.calls.get("/slow") == 1, what="the backend's try")
        writer.transport.abort()
        # The request ends when its last try does: a replay would keep it in flight (and reach
        # the backend) before that.
        await eventually_async(lambda: proxy.generation.in_flight == 0, what="the request's end")
        assert Backend.calls.get("/slow") == 1

    _run(tmp_path, SERVICES, scenario)
