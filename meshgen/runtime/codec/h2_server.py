"""HTTP/2 on a client connection: the server half, on the sans-IO ``h2`` library.

Theory of operation
-------------------
An ``http`` listener's connection starts as HTTP/1.1 (``http1.ServerConnection``); when its
first bytes are the HTTP/2 connection preface (h2c with prior knowledge) or TLS chose ALPN
``h2``, the connection hands its bytes to an :class:`H2Server` from then on. ``h2`` does the
framing, HPACK, stream states and flow-control arithmetic; this module turns its events into
requests and writes responses back, and decides nothing about routing: each stream becomes an
:class:`H2Request` handed to the proxy (``forward/h2_driver.py``), which drives the same request
machine as HTTP/1.1. An :class:`H2Stream` is what a request's "connection" is to the rest of
the runtime (closed, limits, the client's address, flow control of the request body).

Flow control, both ways, so memory stays bounded whatever the peers do:

* request bodies: a DATA frame is acknowledged (WINDOW_UPDATE) only once its bytes went to the
  upstream connection; while the stream has no upstream yet, or the upstream cannot take more,
  acknowledgements wait. The client can then send at most the stream's window (65,535 bytes)
  ahead; the connection's window is large (:data:`CONNECTION_WINDOW`) so one stalled stream
  does not stall the others.
* responses: DATA is sent within the client's windows; what does not fit waits in the stream,
  with two limits (``h2lib.Budget``): a stream's own (``h2lib.STREAM_HIGH_WATER``, 256 KiB)
  and the connection's (``h2lib.CONNECTION_HIGH_WATER``, 1 MiB, for all its streams). Past
  either, the upstream connections stop reading (past the connection's, every stream's but
  those whose client waits for data: nothing of theirs waits and their windows have room),
  and read again below half (in the order they stopped, a few at a time) or as soon as the
  client waits for them. A client whose 100 streams' windows stay closed makes the runtime
  hold that 1 MiB and the read that brought each response's head (it comes before the
  stream has a source to stop): 8-11 MiB, not 100 streams' marks (35 MiB before; HAProxy
  2.6: 3.5 MiB); a client that reads any stream gets it whole. While the client does not
  read the connection at all (the transport's buffer is full) nothing more is sent, and
  nothing more is read from it (its PINGs and SETTINGS would make answers to buffer).

Limits (``listeners[].limits`` and HTTP/2's own): at most :data:`MAX_CONCURRENT_STREAMS` streams
per connection (announced; more is a connection error); the header list is announced as
``SETTINGS_MAX_HEADER_LIST_SIZE`` = ``request_head_bytes``, and a larger one (measured by HPACK
as RFC 9113 section 6.5.2 does) closes the connection with GOAWAY ENHANCE_YOUR_CALM, since the
decoder's state cannot be kept after an aborted block; more than ``request_headers`` header
fields is a 431 and a ``:path`` over ``url_bytes`` a 414 on that stream. CONTINUATION floods
are ``h2`` protocol errors, and so is a frame over the frame size (checked here as soon as
its header arrives: ``h2`` would wait for all of its announced 16 MiB). A stream reset by
the client while its request is still being worked on keeps counting against the
connection's streams until the work stops (more are refused with REFUSED_STREAM). Streams
reset by the client, and those ``h2`` resets for the client's stream errors (a DATA frame
after END_STREAM: MadeYouReset, CVE-2025-8671; ``h2`` reports both as ``StreamReset``),
are abandoned and count against :data:`RESETS_PER_SECOND` (the rapid-reset attack,
CVE-2023-44487): beyond it the connection ends with GOAWAY ENHANCE_YOUR_CALM. Any other
protocol error ends it with GOAWAY and the error's code (PROTOCOL_ERROR, FLOW_CONTROL_ERROR,
...). Refusals are counted in ``meshgen_connections_rejected_total`` as for HTTP/1.1.

Timeouts: the connection's :class:`~.guard.ClientClock` runs as for HTTP/1.1: the first
request's head must arrive within ``request_head_timeout`` of the accept, and a connection with
no open stream closes (GOAWAY NO_ERROR) after ``client_idle_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from ..tables import Limits
from . import h2lib
from .guard import BUSY, IDLE, ClientClock, ListenerGuard
from .http1 import PREFACE, RequestBody, first_header
from .paths import valid_host
from .upstream_conn import Headers

log = logging.getLogger("meshgen.proxy")

MAX_CONCURRENT_STREAMS: Final = 100
RESETS_PER_SECOND: Final = 200
CONNECTION_WINDOW: Final = 16 * 1024 * 1024
_ERR = h2lib.errors.ErrorCodes
_EV = h2lib.events


class Owner(Protocol):
    """The client connection HTTP/2 runs on (``http1.ServerConnection``)."""

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def listener(self) -> object: ...

    @property
    def client_ip(self) -> str: ...

    @property
    def peer_cert(self) -> object: ...

    def close(self) -> None: ...

    def send(self, data: bytes) -> None: ...


class Upstream(Protocol):
    """The upstream side of a stream's response body (``upstream_conn.UpstreamConnection``)."""

    def set_reading(self, on: bool) -> None: ...


class H2Request:
    """One stream's request, with the attributes the proxy reads of an HTTP/1.1 request
    (``http1.Request``): ``version`` is "2", the Host is ``:authority``."""

    __slots__ = ("body", "chunked", "conn", "conn_tokens", "content_length", "expect_continue",
                 "headers", "host", "keep_alive", "method", "request_id", "started", "target",
                 "upgrade", "version", "via", "xff")  # fmt: skip

    def __init__(self, stream: H2Stream) -> None:
        self.conn = stream
        self.method = ""
        self.target = b""
        self.version = "2"
        self.headers: Headers = []
        self.host = ""
        self.keep_alive = True
        self.body: RequestBody | None = None
        self.chunked = False  # the body has no content-length: chunked towards HTTP/1.1
        self.content_length = -1
        self.expect_continue = False
        self.upgrade = False
        self.started = False
        self.request_id: bytes | None = None
        self.conn_tokens: frozenset[bytes] = frozenset()
        self.xff: bytes | None = None
        self.via: bytes | None = None

    def header(self, name: str) -> str | None:
        """First value of a header (router and hash-key callback)."""
        return first_header(self.headers, name)


class H2Stream:
    """One stream of an :class:`H2Server`: its request's connection as the runtime sees it,
    and its response's way out (flow-controlled, module docstring)."""

    __slots__ = ("_body_paused", "_end", "_out", "_out_size", "_trailers", "_unacked",
                 "_upstream_paused", "_working", "body", "closed", "id", "on_close", "server",
                 "upstream", "upstream_stopped")  # fmt: skip

    def __init__(self, server: H2Server, stream_id: int) -> None:
        self.server = server
        self.id = stream_id
        self.closed = False  # reset, or the connection is gone
        self.on_close: Callable[[], None] | None = None
        self.body: RequestBody | None = None
        self.upstream: Upstream | None = None  # paused while the client is slower
        self.upstream_stopped = False
        self._out: deque[bytes] = deque()
        self._out_size = 0
        self._end = False  # the response is complete once ``_out`` is sent
        self._trailers: Headers | None = None
        self._unacked = 0
        self._body_paused = False
        self._upstream_paused = False
        self._working = True  # counted in ``H2Server.working`` until :meth:`release`

    # ---- what the runtime reads of a request's connection ------------------------------
    @property
    def limits(self) -> Limits:
        return self.server.limits

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.server.loop

    @property
    def client_ip(self) -> str:
        return self.server.owner.client_ip

    @property
    def peer_cert(self) -> object:
        return self.server.owner.peer_cert

    @property
    def listener(self) -> object:
        return self.server.owner.listener

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.server.owner.transport

    @property
    def forwarded(self) -> bytes | None:
        return self.server.forwarded

    @forwarded.setter
    def forwarded(self, value: bytes | None) -> None:
        self.server.forwarded = value

    # ---- request body flow control (``http1.RequestBody``'s owner, an upstream's Downstream)
    def set_body_paused(self, paused: bool) -> None:
        self._body_paused = paused
        self._ack(0)

    def set_upstream_paused(self, paused: bool) -> None:
        self._upstream_paused = paused
        self._ack(0)

    def _ack(self, n: int) -> None:
        """Acknowledge ``n`` more received bytes, or keep them unacknowledged while the body
        has nowhere to go (module docstring)."""
        self._unacked += n
        body = self.body
        if (
            self._unacked
            and not self._body_paused
            and not self._upstream_paused
            and (body is None or body.sink is not None)
        ):
            n, self._unacked = self._unacked, 0
            self.server.acknowledge(n, self.id)

    # ---- the response --------------------------------------------------------------------
    def send_head(self, status: int, headers: Headers, end: bool = False) -> None:
        """Send the response head (``end``: the response has no body)."""
        self.server.send_head(self, [(b":status", b"%d" % status), *headers], end)

    def write(self, data: bytes) -> None:
        """A piece of the response body; sent within the client's window, else it waits."""
        if self.closed or not data:
            return
        self._out.append(data)
        self._out_size += len(data)
        self.server.pump(self, len(data))

    def hold(self, on: bool) -> None:
        """Stop the upstream connection's reading (``on``) or let it read again (the
        connection's ``h2lib.Budget``)."""
        self.upstream_stopped = on
        if self.upstream is not None:
            self.upstream.set_reading(not on)

    @property
    def wanted(self) -> bool:
        """Nothing waits, the client reads and its windows have room (``h2lib.Holder``)."""
        server = self.server
        blocked = server._write_paused or server.closed
        return h2lib.wanted(server.h2, self.id, bool(self._out), blocked)

    def detach(self) -> None:
        """The upstream connection is done with the response (read whole, or broken): it
        reads again (for the pool), and the budget stops it no more."""
        self.server.budget.release(self)
        upstream, self.upstream = self.upstream, None
        if self.upstream_stopped:
            self.upstream_stopped = False
            if upstream is not None:
                upstream.set_reading(True)

    def simple(self, status: int, body: bytes, headers: Headers, sized: bool = True) -> None:
        """A whole small response (a local answer); ``sized``: with its content-length."""
        if sized:
            headers = [*headers, (b"content-length", b"%d" % len(body))]
        self.send_head(status, headers, end=not body)
        if body:
            self.write(body)
            self.end()

    def release(self) -> None:
        """The proxy is done with this stream's request (once)."""
        if self._working:
            self._working = False
            self.server.working -= 1

    def end(self, trailers: Headers | None = None) -> None:
        """The response is complete (with ``trailers`` when there are any)."""
        self._end = True
        self._trailers = trailers or None
        self.server.pump(self)

    def reset(self, code: int = _ERR.INTERNAL_ERROR) -> None:
        """End the stream abruptly (RST_STREAM): a response cut short."""
        self.server.reset(self, code)

    @property
    def pending(self) -> int:
        """Response bytes waiting for the client's window."""
        return self._out_size

    def gone(self) -> None:
        """The stream ended from the client's side (reset) or the connection went."""
        if self.closed:
            return
        self.closed = True
        self.server.budget.leave(self)
        self._out.clear()
        self._out_size = 0
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()


Handler = Callable[[H2Request], None]
Refuse = Callable[[H2Stream, int, bytes], None]


class H2Server:
    """HTTP/2 on one client connection (module docstring). ``handler`` takes each request;
    ``refuse`` answers a stream the listener's limits refuse (status, body)."""

    __slots__ = ("_clock", "_draining", "_flood", "_reading", "_resets", "_write_paused",
                 "budget", "closed", "forwarded", "guard", "h2", "handler", "limits", "loop",
                 "owner", "refuse", "streams", "working")  # fmt: skip

    def __init__(
        self,
        owner: Owner,
        guard: ListenerGuard,
        limits: Limits,
        clock: ClientClock,
        loop: asyncio.AbstractEventLoop,
        handler: Handler,
        refuse: Refuse,
    ) -> None:
        self.owner = owner
        self.guard = guard
        self.limits = limits
        self._clock = clock
        self.loop = loop
        self.handler = handler
        self.refuse = refuse
        self.forwarded: bytes | None = None
        self.streams: dict[int, H2Stream] = {}
        self.working = 0  # requests being worked on, reset streams included (module docstring)
        self.closed = False
        self._write_paused = False
        self._reading = h2lib.Reading(self._take)
        self._draining = False
        self._resets: deque[float] = deque()
        self._flood = h2lib.FloodGuard(len(PREFACE))
        self.budget = h2lib.Budget(self._sources)
        codes = h2lib.settings.SettingCodes
        self.h2 = h2lib.new_connection(
            False,
            {
                codes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                codes.MAX_HEADER_LIST_SIZE: limits.request_head_bytes,
            },
            limits.request_head_bytes,
            CONNECTION_WINDOW,
        )
        self._flush()

    # ---- bytes in ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        transport = self.owner.transport
        if transport is not None and not self.closed:
            self._reading.feed(transport, data)

    def _take(self, data: bytes) -> bytes:
        """Work through a read's frames; returns those for a later pass (:class:`h2lib.Reading`)."""
        if self.closed:
            return b""
        try:
            events, rest = h2lib.receive(self.h2, data, self._flood)
        except (h2lib.exceptions.H2Error, ValueError) as exc:
            self._protocol_error(exc)
            return b""
        for event in events:
            if self.closed:
                return b""
            self._event(event)
        self._flush()
        return b"" if self.closed else rest

    def _event(self, event: object) -> None:
        if isinstance(event, _EV.DataReceived):
            stream = self.streams.get(event.stream_id)
            n = event.flow_controlled_length or 0
            body = stream.body if stream is not None else None
            if stream is None or body is None:  # answered already: dropped, window given back
                self.acknowledge(n, event.stream_id)
                return
            if event.data:
                body.feed(event.data)
            stream._ack(n)
        elif isinstance(event, _EV.RequestReceived):
            self._request(event)
        elif isinstance(event, _EV.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.body is not None:
                stream.body.end()
        elif isinstance(event, _EV.WindowUpdated | _EV.RemoteSettingsChanged):
            sid = getattr(event, "stream_id", 0)
            if sid:
                stream = self.streams.get(sid)
                if stream is not None:
                    self.pump(stream)
            else:
                h2lib.pump_each(self.h2, self.streams.values(), self.pump)
        elif isinstance(event, _EV.StreamReset):
            self._reset_by_client(event.stream_id)
        elif isinstance(event, _EV.ConnectionTerminated):
            self.close()

    def _reset_by_client(self, stream_id: int) -> None:
        """The client reset a stream, or made ``h2`` reset it (a stream error): its request
        is abandoned; too many resets a second end the connection (rapid reset, and
        MadeYouReset: counted alike, the proxy stops working on them)."""
        now = time.monotonic()
        resets = self._resets
        resets.append(now)
        while resets and resets[0] < now - 1.0:
            resets.popleft()
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.gone()
        self._idle_check()
        if len(resets) > RESETS_PER_SECOND:
            log.info("http2: %d stream resets in a second: closing", len(resets))
            self.guard.reject("bad_request")
            self.h2.close_connection(error_code=_ERR.ENHANCE_YOUR_CALM)
            self.close()

    def _request(self, event: h2lib.events.RequestReceived) -> None:
        if self.working >= MAX_CONCURRENT_STREAMS:  # reset streams still being worked on
            self._send_reset(event.stream_id, _ERR.REFUSED_STREAM)
            return
        self.working += 1
        stream = H2Stream(self, event.stream_id)
        req = H2Request(stream)
        limits = self.limits
        headers = req.headers
        authority = host = b""
        cookies: list[bytes] = []
        size = 0
        for k, v in event.headers or ():
            size += len(k) + len(v)
            if k[:1] == b":":
                if k == b":method":
                    req.method = v.decode("ascii", "replace")
                elif k == b":path":
                    req.target = v
                elif k == b":authority":
                    authority = v
                continue
            if k == b"cookie":  # split by HTTP/2 (RFC 9113 8.2.3), one line for HTTP/1.1
                cookies.append(v)
                continue
            headers.append((k, v))
            if k == b"host":
                host = v
            elif k == b"content-length":
                req.content_length = int(v) if v.isdigit() and len(v) < 19 else -2
            elif k == b"x-request-id":
                if req.request_id is None:
                    req.request_id = v
            elif k == b"x-forwarded-for":
                req.xff = v if req.xff is None else req.xff + b", " + v
            elif k == b"via":
                req.via = v if req.via is None else req.via + b", " + v
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        self.streams[stream.id] = stream
        self._clock.phase = BUSY
        refusal: tuple[int, str] | None = None
        if len(headers) > limits.request_headers:
            refusal = (431, "request_headers")
        elif size > limits.request_head_bytes:
            refusal = (431, "request_head_bytes")
        elif len(req.target) > limits.url_bytes:
            refusal = (414, "url_bytes")
        else:
            name = authority or host
            req.host = name.decode("latin-1")
            if req.content_length == -2 or not name or not valid_host(req.host):
                refusal = (400, "bad_request")
        if refusal is not None:
            self.guard.reject(refusal[1])
            self.refuse(stream, refusal[0], refusal[1].encode())
            return
        if event.stream_ended is not None:
            if req.content_length < 0 and req.method in ("POST", "PUT", "PATCH"):
                req.content_length = 0
        else:
            req.chunked = req.content_length < 0
            req.body = stream.body = RequestBody(stream)
        self.handler(req)

    # ---- bytes out -----------------------------------------------------------------------
    def acknowledge(self, n: int, stream_id: int) -> None:
        """Give ``n`` received bytes back to the client's windows."""
        if n and not self.closed:
            try:
                self.h2.acknowledge_received_data(n, stream_id)
            except h2lib.exceptions.H2Error:  # the stream closed meanwhile
                self.h2.increment_flow_control_window(n)
            self._flush()

    def send_head(self, stream: H2Stream, headers: Headers, end: bool) -> None:
        if stream.closed or self.closed:
            return
        try:
            self.h2.send_headers(stream.id, headers, end_stream=end)
        except h2lib.exceptions.H2Error as exc:  # headers HTTP/2 cannot carry
            log.info("http2: cannot send a response head: %s", exc)
            self.reset(stream, _ERR.INTERNAL_ERROR)
            return
        self._flush()
        if end:
            self._done(stream)

    def _sources(self) -> list[H2Stream]:
        """The streams whose response an upstream connection is reading (``budget``)."""
        return [stream for stream in self.streams.values() if stream.upstream is not None]

    def pump(self, stream: H2Stream, grew: int = 0) -> None:
        """Send what the client's windows allow of ``stream``'s response (``grew`` bytes more
        than the last pump), and tell the budget; end it when all went and the response is
        complete."""
        if stream.closed or self.closed:
            return
        h2 = self.h2
        out = stream._out
        sid = stream.id
        sent = 0
        try:
            if not self._write_paused:  # (only the transport's callbacks change it)
                sent = h2lib.send_within_windows(h2, sid, out, self._flood)
                stream._out_size -= sent
            ended = stream._end and not out
            if ended:
                if stream._trailers is not None:
                    h2.send_headers(sid, stream._trailers, end_stream=True)
                else:
                    h2.end_stream(sid)
        except h2lib.exceptions.H2Error as exc:
            log.info("http2: cannot send on stream %d: %s", sid, exc)
            self.budget.changed(stream, grew - sent)
            self.reset(stream, _ERR.INTERNAL_ERROR)
            return
        self._flush()
        self.budget.changed(stream, grew - sent)
        if ended:
            self._done(stream)

    def _done(self, stream: H2Stream) -> None:
        """The response went out whole. A request body still arriving is not wanted any more
        (RFC 9113 section 8.1: RST_STREAM NO_ERROR)."""
        if self.streams.pop(stream.id, None) is None:
            return
        self.budget.leave(stream)
        body = stream.body
        if body is not None and not body.complete:
            self._send_reset(stream.id, _ERR.NO_ERROR)
        stream.body = None
        stream.closed = True
        stream.on_close = None
        self._idle_check()

    def reset(self, stream: H2Stream, code: int) -> None:
        """End ``stream`` with RST_STREAM ``code``."""
        if self.streams.pop(stream.id, None) is not None:
            self._send_reset(stream.id, code)
        stream.gone()
        self._idle_check()

    def _send_reset(self, stream_id: int, code: int) -> None:
        if not self.closed:
            try:  # (its frames in flight are free)
                h2lib.reset_stream(self.h2, stream_id, code, self._flood)
            except h2lib.exceptions.H2Error:
                return
            self._flush()

    def _idle_check(self) -> None:
        if not self.streams and not self.closed:
            if self._draining:
                self.close()
                return
            clock = self._clock
            clock.phase, clock.since = IDLE, self.loop.time()

    def _flush(self) -> None:
        """Queue what ``h2`` has to send: a loop pass's frames (many streams' answers) go out
        in one write, a large piece at once (``upstream_conn.WriteBatch``)."""
        data = self.h2.data_to_send()
        if data:
            self.owner.send(data)

    # ---- the connection ------------------------------------------------------------------
    def _protocol_error(self, exc: Exception) -> None:
        """A connection error: h2 has queued GOAWAY with its code; send it and close."""
        log.info("http2: closing a connection: %s", exc)
        too_large = isinstance(exc, h2lib.exceptions.DenialOfServiceError)
        self.guard.reject("request_head_bytes" if too_large else "bad_request")
        self.close()

    def pause_writing(self) -> None:
        """The client does not read: send nothing more, read nothing more."""
        self._write_paused = True
        transport = self.owner.transport
        if transport is not None:
            self._reading.block(transport)

    def resume_writing(self) -> None:
        self._write_paused = False
        transport = self.owner.transport
        if transport is not None:
            self._reading.unblock(transport)
        for stream in list(self.streams.values()):
            self.pump(stream)

    @property
    def idle(self) -> bool:
        return not self.streams

    def drain(self) -> None:
        """Stop taking new streams (GOAWAY NO_ERROR); close once the open ones are done."""
        if self.closed:
            return
        self._draining = True
        self.h2.close_connection(error_code=_ERR.NO_ERROR)
        self._flush()
        if not self.streams:
            self.close()

    def expired(self, head: bool) -> None:
        """The head or idle deadline passed (``ClientClock``)."""
        if head:
            self.guard.reject("request_head_timeout")
        if not self.closed:
            self.h2.close_connection(error_code=_ERR.NO_ERROR)
        self.close()

    def close(self) -> None:
        """Flush what is queued (a GOAWAY) and close the connection."""
        if not self.closed:
            self._flush()
            self.closed = True
        self.owner.close()

    def connection_lost(self) -> None:
        """Every stream ends with the connection."""
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.gone()
