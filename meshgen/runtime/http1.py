"""HTTP/1.1 wire pieces on httptools (llhttp): the downstream server and upstream client protocols.

Theory of operation: both sides are plain ``asyncio.Protocol`` objects, never streams, so bytes
move from one transport to the other inside ``data_received`` without a task switch.

* :class:`ServerConnection` parses requests. Each request is handed to the proxy's handler by a
  single long-lived coroutine per connection (pipelined requests queue, in order). The request
  body is a :class:`RequestBody`: chunks go straight to the attached upstream sink, or wait in a
  small buffer; a copy of the first :data:`REPLAY_LIMIT` bytes is kept so a retry can resend it.
* :class:`UpstreamConnection` writes one request at a time and parses the response. Headers
  resolve a future; body chunks go straight to the downstream writer once the proxy attached it.
* Flow control (a 1 GiB body never sits in memory): when a transport's write buffer is full
  (``pause_writing``) the peer transport stops reading until ``resume_writing``.
* llhttp rejects smuggling inputs (Content-Length with Transfer-Encoding, differing duplicate
  Content-Length, bad chunk sizes); a parse error answers 400 and closes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

REPLAY_LIMIT = 64 * 1024
HIGH_WATER = 256 * 1024
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"expect"}
)  # fmt: skip
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
Headers = list[tuple[bytes, bytes]]
# Timers fire up to a millisecond early (uvloop's clock resolution); treat that as on time.
_TIMER_SLACK = 0.002


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def simple_response(
    status: int,
    body: bytes,
    extra: Headers | None = None,
    close: bool = False,
) -> bytes:
    """A complete small response (local errors, redirects)."""
    parts = [status_line(status), b"content-type: text/plain; charset=utf-8\r\n"]
    parts.extend(b"%s: %s\r\n" % (k, v) for k, v in extra or ())
    parts.append(b"content-length: %d\r\n" % len(body))
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


class BodySink:
    """Where a body goes: ``write`` each chunk, ``finish`` once."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class RequestBody:
    """A request body arriving from the client, delivered to one upstream at a time."""

    __slots__ = (
        "_conn",
        "complete",
        "delivered",
        "on_end",
        "pending",
        "pending_size",
        "received",
        "replay",
        "sink",
    )

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self.replay: list[bytes] | None = []
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.received = 0
        self.sink: BodySink | None = None
        self.complete = False
        self.delivered = False
        self.on_end: Callable[[bytes | None], None] | None = None  # mirroring waits for it

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.replay is not None:
            if self.received <= REPLAY_LIMIT:
                self.replay.append(data)
            else:
                self.replay = None
        if self.sink is not None:
            self.sink.write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > HIGH_WATER:
            self._conn.set_body_paused(True)

    def end(self) -> None:
        self.complete = True
        if self.sink is not None:
            self.sink.finish()
        if self.on_end is not None:
            on_end, self.on_end = self.on_end, None
            on_end(self.buffered())

    @property
    def replayable(self) -> bool:
        return not self.delivered or self.replay is not None

    def attach(self, sink: BodySink) -> bool:
        """Send everything so far to ``sink`` and stream the rest; False if it cannot be resent."""
        if self.delivered:
            if self.replay is None:
                return False
            chunks = self.replay
        else:
            chunks = self.pending
        self.pending = []
        self.pending_size = 0
        self.sink = sink
        self.delivered = True
        for chunk in chunks:
            sink.write(chunk)
        if self.complete:
            sink.finish()
        self._conn.set_body_paused(False)
        return True

    def detach(self) -> None:
        self.sink = None

    def buffered(self) -> bytes | None:
        """The whole body if it is complete and was kept (mirroring)."""
        return b"".join(self.replay) if self.complete and self.replay is not None else None


class Request:
    """One parsed request head; ``headers`` keep order with lower-case names."""

    __slots__ = ("body", "chunked", "conn", "conn_tokens", "content_length", "expect_continue",
                 "headers", "host", "hosts", "keep_alive", "method", "request_id", "started",
                 "target", "upgrade", "version", "via", "xff")  # fmt: skip

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.method = ""
        self.target = b""
        self.version = "1.1"
        self.headers: Headers = []
        self.host = ""
        self.hosts = 0  # Host header lines seen (more than one is a 400)
        self.keep_alive = True
        self.body: RequestBody | None = None
        self.chunked = False
        self.content_length = -1
        self.expect_continue = False
        self.upgrade = False
        self.started = False  # response head written
        # Gathered in the one pass over the head, so the proxy never rescans the headers.
        self.request_id: bytes | None = None
        self.conn_tokens: frozenset[bytes] = _NO_TOKENS  # header names listed in Connection
        self.xff: bytes | None = None  # incoming X-Forwarded-For (all lines, comma-joined)
        self.via: bytes | None = None

    def header(self, name: str) -> str | None:
        """First value of a header (router and hash-key callback)."""
        key = name.encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


Handler = Callable[[Request], Awaitable[None]]
_NO_TOKENS: frozenset[bytes] = frozenset()


_NOTED = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"x-request-id", b"x-forwarded-for",
     b"via", b"connection", b"expect"}
)  # fmt: skip


def _joined(old: bytes | None, value: bytes) -> bytes:
    return value if old is None else old + b", " + value


def _note(req: Request, k: bytes, v: bytes) -> None:
    """Record a request header the proxy acts on (one pass, while llhttp parses)."""
    if k == b"host":
        req.hosts += 1
        req.host = v.decode("latin-1")
    elif k == b"content-length":
        req.content_length = int(v)
    elif k == b"transfer-encoding":
        req.chunked = True
    elif k == b"x-request-id":
        if req.request_id is None:
            req.request_id = v
    elif k == b"x-forwarded-for":
        req.xff = _joined(req.xff, v)
    elif k == b"via":
        req.via = _joined(req.via, v)
    elif k == b"connection":
        req.conn_tokens = req.conn_tokens | {t.strip().lower() for t in v.split(b",")}
    elif v.lower() == b"100-continue":  # expect
        req.expect_continue = True


class ServerConnection(asyncio.Protocol):
    """One downstream connection: parse, queue, hand requests to the proxy in order."""

    def __init__(
        self, handler: Handler, listener: object, registry: set[ServerConnection] | None = None
    ) -> None:
        self.handler = handler
        self.registry = registry
        self.listener = listener  # the proxy's per-listener context, opaque here
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.peer_cert: object = None
        self._parser = httptools.HttpRequestParser(self)
        self._req: Request | None = None  # being parsed
        self._req_in_progress = False
        self.active: Request | None = None  # being answered
        self._queue: deque[Request] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._body_paused = False
        self._pipeline_paused = False
        self._upstream_paused = False
        self._reading_paused = False
        self.write_paused = False
        self.upstream: UpstreamConnection | None = None  # response source, paused with us
        self.tunnel: asyncio.Transport | None = None
        self.tunnel_buffer: list[bytes] | None = None
        self.closed = False
        self.on_close: Callable[[], None] | None = None
        self.forwarded: bytes | None = None  # the proxy's per-connection X-Forwarded-* lines
        # Kept: asyncio.get_running_loop() costs a getpid() system call on every call.
        self.loop: asyncio.AbstractEventLoop | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        if self.registry is not None:
            self.registry.add(self)
        peer = self.transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        ssl_obj = self.transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            self.peer_cert = ssl_obj.getpeercert()
        self.loop = asyncio.get_running_loop()
        self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.tunnel_buffer is not None:
            self.tunnel_buffer.append(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel_buffer = [data[exc.args[0] :]] if exc.args else []
        except httptools.HttpParserError:
            self._bad_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.registry is not None:
            self.registry.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        if self.on_close is not None:
            self.on_close()
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.set_reading(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.set_reading(True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._req = Request(self)
        self._req_in_progress = True

    def on_url(self, url: bytes) -> None:
        assert self._req is not None
        self._req.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._req
        assert req is not None
        k = name.lower()
        req.headers.append((k, value))
        if k in _NOTED:
            _note(req, k, value)

    def on_headers_complete(self) -> None:
        req = self._req
        assert req is not None
        p = self._parser
        req.method = p.get_method().decode("ascii")
        req.version = p.get_http_version()
        req.keep_alive = p.should_keep_alive()
        req.upgrade = p.should_upgrade()
        if (
            req.hosts > 1
            or (req.hosts == 0 and req.version == "1.1")
            or (req.chunked and req.content_length >= 0)
        ):
            raise httptools.HttpParserError("bad host or framing")
        if req.chunked or req.content_length > 0:
            req.body = RequestBody(self)
        self._queue.append(req)
        self._req_in_progress = False
        if self.active is not None:
            self._pipeline_paused = True
            self._apply_reading()
        self._wake()

    def on_body(self, body: bytes) -> None:
        assert self._req is not None and self._req.body is not None
        self._req.body.feed(body)

    def on_message_complete(self) -> None:
        req = self._req
        if req is not None and req.body is not None:
            req.body.end()

    # proxy-facing helpers
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    @property
    def idle(self) -> bool:
        """No request being answered or queued (safe to close while draining)."""
        return self.active is None and not self._queue and self._req_in_progress is False

    def set_body_paused(self, paused: bool) -> None:
        self._body_paused = paused
        self._apply_reading()

    def set_upstream_paused(self, paused: bool) -> None:
        """The upstream cannot take more request body right now."""
        self._upstream_paused = paused
        self._apply_reading()

    def _apply_reading(self) -> None:
        want_paused = self._body_paused or self._upstream_paused or self._pipeline_paused
        if want_paused != self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = want_paused
            if want_paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _bad_request(self) -> None:
        req = self.active
        if req is None or not req.started:
            if req is not None:
                req.started = True
            self.write(simple_response(400, b"bad request\n", close=True))
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _serve(self) -> None:
        loop = self.loop
        assert loop is not None
        while not self.closed:
            if not self._queue:
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            req = self._queue.popleft()
            self.active = req
            try:
                await self.handler(req)
            except Exception:
                if not req.started:
                    req.started = True
                    self.write(simple_response(500, b"internal error\n", close=True))
                self.close()
                raise
            self.active = None
            if self.tunnel is not None or self.closed:
                return
            if not req.keep_alive or (req.body is not None and not req.body.complete):
                self.close()
                return
            if self._pipeline_paused:
                self._pipeline_paused = False
                self._apply_reading()


class UpstreamConnection(asyncio.Protocol, BodySink):
    """One pooled connection to an endpoint; one exchange at a time.

    ``headers_future`` resolves with the final response head. ``done`` (created only when
    someone waits for it) resolves once the whole body went to the sink; most small responses
    are ``finished`` before anyone asks. ``arm``/``disarm`` give the exchange a deadline with
    one long-lived timer per connection that is re-armed only when it fires early, instead of a
    timer per request.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.status = 0
        self.headers: Headers = []
        self.headers_future: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self.finished = False  # the body went to the sink completely
        self.failure: Exception | None = None  # the exchange broke off
        self.keep_alive = False
        self.has_length = False  # the response carries Content-Length
        self.upgraded: bytes | None = None
        self.until_close = False
        self.chunked_out = False
        self.received = False
        self.last_activity = 0.0
        self.timed_out = False
        self._deadline = 0.0  # 0: no deadline armed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sink: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []
        self._complete = False
        self.downstream: ServerConnection | None = None  # request body source, paused with us
        self.on_lost: Callable[[], None] | None = None

    def begin(self, head: bytes, chunked: bool, downstream: ServerConnection | None) -> None:
        """Start an exchange: reset response state and write the request head."""
        loop = self._loop
        assert loop is not None and self.transport is not None
        self.status = 0
        self.headers = []
        self.headers_future = loop.create_future()
        self._done = None
        self.finished = False
        self.failure = None
        self.timed_out = False
        self.chunked_out = chunked
        self.received = False
        self._sink = None
        self._early = []
        self._complete = False
        self.until_close = True  # until a Content-Length or Transfer-Encoding says otherwise
        self.has_length = False
        self.downstream = downstream
        self.last_activity = loop.time()
        self.transport.write(head)

    @property
    def done(self) -> asyncio.Future[None]:
        """Resolves when the response body has gone to the sink; fails if the exchange broke."""
        fut = self._done
        if fut is None:
            assert self._loop is not None
            fut = self._done = self._loop.create_future()
            if self.finished:
                fut.set_result(None)
            elif self.failure is not None:
                fut.set_exception(self.failure)
        return fut

    # deadline: one timer per connection, re-armed lazily
    def arm(self, timeout: float) -> None:
        """Abort the exchange (``timed_out``) unless :meth:`disarm` runs within ``timeout``."""
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + timeout
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
            self._timer_at = deadline

    def disarm(self) -> None:
        self._deadline = 0.0

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline == 0.0 or self.closed:
            return
        loop = self._loop
        assert loop is not None
        if loop.time() + _TIMER_SLACK >= deadline:
            self.timed_out = True
            self.abort()
        else:
            self._timer = loop.call_at(deadline, self._expire)
            self._timer_at = deadline

    # BodySink: request body towards the endpoint
    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            return
        if self.chunked_out:
            self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.transport.write(data)

    def finish(self) -> None:
        if self.chunked_out and not self.closed and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")

    def take_early(self) -> list[bytes]:
        """Body chunks received before a sink was attached (the caller writes them)."""
        early, self._early = self._early, []
        return early

    def start_body(self, sink: Callable[[bytes], None]) -> None:
        """Response body chunks go to ``sink`` from now on (buffered ones first)."""
        self._sink = sink
        if self._early:
            for chunk in self._early:
                sink(chunk)
            self._early = []
        if self._complete:
            self._resolve_done()

    def set_reading(self, on: bool) -> None:
        if self.transport is not None and not self.closed:
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.last_activity = self._loop.time()  # type: ignore[union-attr]
        if self.upgraded is not None:
            if self._sink is not None:
                self._sink(data)
            else:
                self._early.append(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = data[exc.args[0] :] if exc.args else b""
            self._set_headers()
        except httptools.HttpParserError as exc:
            self._fail(ConnectionResetError(f"bad response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.on_lost is not None:
            self.on_lost()
            self.on_lost = None
        ended = self.upgraded is not None or (self.until_close and self.status >= 200)
        if ended and not self.finished and self.failure is None:
            self._complete = True
            if self._sink is not None:
                self._resolve_done()
            return
        self._fail(ConnectionResetError("upstream closed"))

    def pause_writing(self) -> None:
        if self.downstream is not None:
            self.downstream.set_upstream_paused(True)

    def resume_writing(self) -> None:
        if self.downstream is not None:
            self.downstream.set_upstream_paused(False)

    def _fail(self, exc: Exception) -> None:
        fut = self.headers_future
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # mark retrieved; the proxy may no longer be waiting
        if self.finished or self.failure is not None:
            return
        self.failure = exc
        done = self._done
        if done is not None and not done.done():
            done.set_exception(exc)
            done.exception()

    def _set_headers(self) -> None:
        fut = self.headers_future
        if fut is not None and not fut.done():
            fut.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        k = name.lower()
        self.headers.append((k, value))
        if k == b"content-length":
            self.has_length = True
            self.until_close = False
        elif k == b"transfer-encoding":
            self.until_close = False

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # interim response: wait for the final one
            self.has_length = False
            self.until_close = True
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self._set_headers()

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink(body)
        else:
            self._early.append(body)

    def on_message_complete(self) -> None:
        if self.status == 0 or self.status == 101:
            return  # end of an interim 1xx; after a 101 the tunnel runs until a side closes
        self._complete = True
        if self._sink is not None:
            self._resolve_done()

    def _resolve_done(self) -> None:
        if self.finished or self.failure is not None:
            return
        self.finished = True
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)
