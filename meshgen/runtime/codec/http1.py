"""HTTP/1.1 wire pieces on httptools (llhttp): the downstream server and upstream client protocols.

Theory of operation: both sides are plain ``asyncio.Protocol`` objects, never streams, so bytes
move from one transport to the other inside ``data_received`` without a task switch.

* :class:`ServerConnection` parses requests. Each request is handed to the proxy's handler by a
  single long-lived coroutine per connection (pipelined requests queue, in order). The request
  body is a :class:`RequestBody`: chunks go straight to the attached upstream sink, or wait in a
  small buffer; a copy of the first :data:`REPLAY_LIMIT` bytes is kept so a retry can resend it.
* :class:`UpstreamConnection` (in ``upstream_conn``, re-exported here) writes one request at a
  time and parses the response. Headers resolve a future; body chunks go straight to the
  downstream writer once the proxy attached it.
* Flow control (a 1 GiB body never sits in memory): when a transport's write buffer is full
  (``pause_writing``) the peer transport stops reading until ``resume_writing``.
* llhttp rejects smuggling inputs (Content-Length with Transfer-Encoding, differing duplicate
  Content-Length, bad chunk sizes); a parse error answers 400 and closes. A transfer-coding
  other than one ``chunked`` is refused (``gzip, chunked``: 501 as RFC 9112 section 6.1; any
  other: 400), and so are HTTP/0.9 (400) and versions other than 1.0 and 1.1 (505). So is
  what HTTP Desync Guardian calls ambiguous: Transfer-Encoding in HTTP/1.0, a GET or HEAD with
  a body, and header names that only look like Transfer-Encoding or Content-Length.
* Limits (``listeners[].limits``, :class:`~.tables.Limits`): a target over ``url_bytes`` is a 414,
  a head over ``request_head_bytes`` or ``request_headers`` a 431, and the connection closes.
  Head bytes and header lines are counted after each read while a head is incomplete, so an
  endless header line or header list is refused after at most one read past the limit, before
  llhttp's per-read re-concatenation of the line can grow; a read that carried a whole head and
  more is measured exactly. A chunked body's trailer section is bounded the same way (431 past
  ``request_head_bytes``: llhttp would buffer an endless field whole) and dropped: the proxy
  frames the body it forwards, and a trailer field never joins the head (RFC 9110 6.5.1).
* Pipelining: at most :data:`MAX_PIPELINED` requests wait behind the one being answered.
  llhttp parses a whole read, so one read of small requests would otherwise queue thousands
  (256 KiB of them: ~9,000 requests, ~2 MB per connection); the one past the limit is a 429
  once those before it are answered, and the connection closes.
* Refusals and parse errors after a request that is being answered (bytes after
  ``Connection: close``, garbage after a valid request) never take its place: it is answered
  first, then the error (unless that request closed the connection anyway); an error in the
  body of the request being answered ends it at once.
* Timeouts (:class:`~.guard.ClientClock`): a request head must arrive whole within
  ``request_head_timeout`` of its first byte (a new connection's first head: of the accept),
  else 408 (a connection that sent nothing is just closed) and close; a keep-alive connection
  with no request in flight closes after ``client_idle_timeout``. While a request is in flight
  the route's ``timeout`` and ``idle_timeout`` apply instead. The time a head began is read
  only when the read that brought its first byte did not also complete it (the common head
  arrives whole, and its time would never be used), at the end of that read's parsing: the
  same loop pass.
* Upgrade: after a request with ``Upgrade`` (llhttp hands everything after its head over as
  raw bytes) its Content-Length body is forwarded, then reading pauses until the answer: a 101
  starts the tunnel with what was read meanwhile; any other answer means the upstream refused,
  and the connection carries on as HTTP/1.1 from those bytes, with a fresh parser. An upgrade
  request with a chunked body is a 400 (its end could not be told from the tunnel's bytes).
* A lost connection drops its parser and requests at once: the parser holds this protocol
  through its callbacks, so without that a half-parsed head would live until the cyclic garbage
  collector runs.
* Host (RFC 9112 section 3.2): an HTTP/1.1 request without exactly one Host line, or with an
  invalid value (``a b``, control characters), or with an empty one on an origin-form target
  (an ``http`` URI with an empty host is invalid, RFC 9110 section 4.2.1) is a 400. An
  absolute-form target's authority replaces the Host header (RFC 9112 section 3.2.2), so
  routing and the upstream ``Host`` use the authority, as Envoy and HAProxy do.
* The request's version comes from llhttp (``get_http_version``, which formats a string: a
  quarter of a microsecond per request), except when the read being parsed began with this
  request's head: then the bytes llhttp accepted are at hand, and ``" HTTP/1.1\\r\\n"`` right
  after the method, one space and the target can only be that line's end (before it the line
  holds no CR or LF; llhttp skips only CR and LF before a request line).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Final, Protocol, cast

import httptools

from .guard import BUSY, HEAD, IDLE, ClientClock, ListenerGuard, aborted_if_stalled
from .paths import target_authority, valid_host
from .upstream_conn import (
    NO_TOKENS,
    BodySink,
    Headers,
    WriteBatch,
    connection_tokens,
    head_size,
    write_batch,
)
from .upstream_conn import UpstreamConnection as UpstreamConnection

REPLAY_LIMIT: Final = 64 * 1024
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # HTTP/2's connection preface (RFC 9113 3.4)
HIGH_WATER: Final = 256 * 1024
MAX_PIPELINED: Final = 100
"""Requests that may wait on one connection behind the one being answered: as many as an
HTTP/2 client may have streams open (module docstring, Pipelining)."""
_STATUS_LINES: Final = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}


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


class BodySource(Protocol):
    """Where a request body comes from (a connection, an HTTP/2 stream): it stops reading
    while the body has nowhere to go."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...

    def set_body_paused(self, paused: bool) -> None: ...


class H2Session(Protocol):
    """HTTP/2 on a connection that switched to it (``h2_server.H2Server``)."""

    @property
    def idle(self) -> bool: ...

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def drain(self) -> None: ...

    def expired(self, head: bool) -> None: ...


class RequestBody:
    """A request body arriving from the client, delivered to one upstream at a time."""

    __slots__ = (
        "_conn",
        "complete",
        "delivered",
        "ended_at",
        "on_end",
        "pending",
        "pending_size",
        "received",
        "replay",
        "sink",
    )

    def __init__(self, conn: BodySource) -> None:
        self._conn = conn
        self.replay: list[bytes] | None = []
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.received = 0
        self.sink: BodySink | None = None
        self.complete = False
        self.ended_at = 0.0  # loop time of the body's last byte (the route timeout starts)
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
        self.ended_at = self._conn.loop.time()  # type: ignore[union-attr]
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
        self.conn_tokens: frozenset[bytes] = NO_TOKENS  # header names listed in Connection
        self.xff: bytes | None = None  # incoming X-Forwarded-For (all lines, comma-joined)
        self.via: bytes | None = None

    def header(self, name: str) -> str | None:
        """First value of a header (router and hash-key callback)."""
        return first_header(self.headers, name)


def first_header(headers: Headers, name: str) -> str | None:
    """First value of header ``name`` (lower-case) in ``headers``; shared by every request
    shape the router reads (parsed here, or made in-process by ``forward.local``)."""
    key = name.encode("latin-1")
    for k, v in headers:
        if k == key:
            return v.decode("latin-1")
    return None


Handler = Callable[[Request], Awaitable[None]]
# Takes a request in protocol callbacks (no coroutine) and returns True, or returns False having
# done nothing; a request it took ends with ``ServerConnection.request_done``.
FastHandler = Callable[[Request], bool]
# Switches a connection to HTTP/2 (the proxy's ``h2_server.H2Server`` on it and its clock).
H2Start = Callable[["ServerConnection", ClientClock], H2Session]


_NOTED: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"x-request-id", b"x-forwarded-for",
     b"via", b"connection", b"expect"}
)  # fmt: skip


class Refused(Exception):
    """Raised in a parser callback: answer ``status`` and close (``reason`` is counted)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.refusal = (status, reason)


Refusal = tuple[int, str]  # (status, reason); the exception itself is never kept (its frames
_BAD_REQUEST: Refusal = (400, "bad_request")  # would hold the connection in a cycle)


_REASONS = {400: b"bad request\n", 408: b"request timeout\n", 414: b"uri too long\n",
            429: b"too many pipelined requests\n", 431: b"request header fields too large\n",
            501: b"transfer-coding not implemented\n",
            505: b"http version not supported\n"}  # fmt: skip


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
        coding = v.strip().lower()
        if coding != b"chunked" or req.chunked:  # RFC 9112 6.1: 501 for a coding we lack
            raise Refused(501 if coding.endswith(b", chunked") else 400, "bad_request")
        req.chunked = True
    elif k == b"x-request-id":
        if req.request_id is None:
            req.request_id = v
    elif k == b"x-forwarded-for":
        req.xff = _joined(req.xff, v)
    elif k == b"via":
        req.via = _joined(req.via, v)
    elif k == b"connection":
        req.conn_tokens = connection_tokens(v, req.conn_tokens)
    elif v.lower() == b"100-continue":  # expect
        req.expect_continue = True


# The common methods' names, decoded once (llhttp only reports methods it knows).
_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
}
_GOOD_HOSTS: Final[set[str]] = set()  # valid non-empty Host values seen (bounded)
_NAMES: Final[dict[bytes, bytes]] = {}  # header names as sent -> lower case, checked once (bounded)
_FRAMING = frozenset({b"transferencoding", b"contentlength"})
_NOT_LETTERS = bytes(c for c in range(256) if not chr(c).isalpha() or c > 127)


def _name(name: bytes) -> bytes:
    """A header name not seen yet: lower case, and refused (400) when it only looks like
    Transfer-Encoding or Content-Length (``Transfer_Encoding``, ``Content.Length``): a backend
    that folds such spellings (CGI, WSGI) would frame the body differently."""
    k = name.lower()
    if k not in _NOTED and k.translate(None, _NOT_LETTERS) in _FRAMING:
        raise Refused(400, "bad_request")
    if len(_NAMES) >= 4096:
        _NAMES.clear()
    _NAMES[name] = k
    return k


def _check_host(req: Request) -> None:
    """RFC 9112 section 3.2 (see the module docstring); raises to answer 400."""
    authority = target_authority(req.target)
    if authority is not None:
        if not authority or not valid_host(authority):
            raise httptools.HttpParserError("bad authority")
        if req.host and not valid_host(req.host):
            raise httptools.HttpParserError("bad host")
        req.host = authority
        return
    host = req.host
    if not host:
        if req.version == "1.1":
            raise httptools.HttpParserError("empty host")
        return
    if not valid_host(host):
        raise httptools.HttpParserError("bad host")
    if len(_GOOD_HOSTS) >= 4096:
        _GOOD_HOSTS.clear()
    _GOOD_HOSTS.add(host)


class ServerConnection(asyncio.Protocol):
    """One downstream connection: parse, queue, hand requests to the proxy in order."""

    __deletable__ = ("_parser",)  # freed at close (a compiled class must say so)
    __slots__ = ("__weakref__", "_admitted", "_body_paused", "_chunk", "_clock", "_deferred",
                 "_framing", "_framing_raw", "_head_raw", "_head_slack", "_max_head",
                 "_max_headers", "_max_url", "_parser",
                 "_pipeline_paused", "_queue", "_read", "_reading_paused", "_req",
                 "_req_in_progress",
                 "_slack", "_sniff", "_upgrade_body", "_upgrade_wait", "_upstream_paused",
                 "_waiter", "active", "batch", "client_ip", "closed", "fast", "forwarded", "guard",
                 "h2", "h2_start", "handler",
                 "limits", "listener", "loop", "on_close", "peer_cert", "registry", "transport",
                 "tunnel", "tunnel_buffer", "upstream", "write_paused")  # fmt: skip

    def __init__(
        self,
        handler: Handler,
        listener: object,
        guard: ListenerGuard,
        registry: set[ServerConnection] | None = None,
        fast: FastHandler | None = None,
        h2_start: H2Start | None = None,
    ) -> None:
        self.handler = handler
        self.fast = fast
        self.h2_start = h2_start  # None: HTTP/1.x only
        self.h2: H2Session | None = None  # the connection switched to HTTP/2
        # The first bytes while they may still be the HTTP/2 preface; None once decided.
        self._sniff: bytes | None = None
        self.registry = registry
        self.listener = listener  # the proxy's per-listener context, opaque here
        self.guard = guard
        limits = self.limits = guard.limits  # a reload's new limits apply to new connections
        self._max_url = limits.url_bytes
        self._max_headers = limits.request_headers
        self._max_head = limits.request_head_bytes
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.peer_cert: object = None
        self._parser: httptools.HttpRequestParser  # made once the connection is admitted
        self._clock: ClientClock  # likewise
        self._admitted = False
        self._req: Request | None = None  # being parsed
        self._req_in_progress = False
        # Head bytes (module docstring): the size of the read being parsed, its bytes before the
        # current head began (when a message ended in it), and the head's bytes so far.
        self._chunk = 0
        self._read = b""  # the read being parsed (only while it is: see ``_version``)
        self._slack = 0
        self._head_raw = 0
        self._head_slack = 0
        self._framing = False  # a chunked body's trailer section is being read
        self._framing_raw = 0  # bytes read since, while no content came
        self._deferred: Refusal | None = None  # answered once the requests before it are
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
        self.tunnel_buffer: list[bytes] | None = None  # read after an upgrade request
        self._upgrade_body = 0  # bytes of the upgrade request's body still to come
        self._upgrade_wait = False  # reading paused until the upgrade request is answered
        self.closed = False
        self.on_close: Callable[[], None] | None = None
        self.forwarded: bytes | None = None  # the proxy's per-connection X-Forwarded-* lines
        # Kept: asyncio.get_running_loop() costs a getpid() system call on every call.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.batch: WriteBatch | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        if not self.guard.admit(self.transport):
            return  # closed at once; connection_lost follows
        self._admitted = True
        self._parser = httptools.HttpRequestParser(self)
        if self.registry is not None:
            self.registry.add(self)
        peer = self.transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        ssl_obj = self.transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            self.peer_cert = ssl_obj.getpeercert()
        self.loop = asyncio.get_running_loop()
        self.batch = write_batch(self.loop)
        self._clock = ClientClock(self.loop, self.limits, self._expired)
        self.loop.create_task(self._serve())
        if self.h2_start is not None:
            if ssl_obj is None:
                self._sniff = b""
            elif ssl_obj.selected_alpn_protocol() == "h2":
                self.h2 = self.h2_start(self, self._clock)

    def _sniffed(self, data: bytes) -> bytes | None:
        """The first bytes of a plain connection: HTTP/2 with prior knowledge when they are
        the preface (then the connection switches), else HTTP/1.x. Returns the bytes for
        HTTP/1.x, or None (switched, or not decided yet: at most the preface is kept)."""
        seen = self._sniff + data  # type: ignore[operator]
        n = min(len(seen), len(PREFACE))
        if seen[:n] != PREFACE[:n]:
            self._sniff = None
            return seen
        if n < len(PREFACE):
            self._sniff = seen
            return None
        self._sniff = None
        assert self.h2_start is not None
        h2 = self.h2 = self.h2_start(self, self._clock)
        h2.data_received(seen)
        return None

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self.h2.data_received(data)
            return
        if self._sniff is not None:
            first = self._sniffed(data)
            if first is None:
                return
            data = first
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.tunnel_buffer is not None:
            self._after_upgrade(data)
            return
        clock = self._clock
        began = clock.phase == IDLE  # the first byte of the next request: its head is timed,
        if began:  # from now, once it is known not to end in this read (module docstring)
            clock.phase = HEAD
        n = self._chunk = len(data)
        self._slack = 0
        if self._req_in_progress:
            self._head_raw += n
        elif self._framing:
            self._framing_raw += n
        self._read = data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel_buffer = []
            self._after_upgrade(data[exc.args[0] :] if exc.args else b"")
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._refuse(cause.refusal if isinstance(cause, Refused) else _BAD_REQUEST)
            del cause  # its traceback holds this frame: no cycle through the protocol
            return
        finally:
            self._read = b""
            if began and clock.phase == HEAD:
                clock.since = self.loop.time()  # type: ignore[union-attr]
        if self._req_in_progress:  # a head goes on past this read
            req = self._req
            if self._head_raw - self._head_slack > self._max_head:
                self._refuse((431, "request_head_bytes"))
            elif req is not None and len(req.headers) > self._max_headers:
                self._refuse((431, "request_headers"))
        elif self._framing and self._framing_raw > self._max_head:  # a trailer section without
            self._refuse((431, "request_head_bytes"))  # end: llhttp would buffer its field

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._admitted:
            return
        self.guard.release()
        self._clock.close()
        if self.registry is not None:
            self.registry.discard(self)
        if self.h2 is not None:
            self.h2.connection_lost()
        if self.tunnel is not None:
            self.tunnel.close()
        if self.on_close is not None:
            self.on_close()
        # Free what the peer sent now: the parser and this protocol hold each other.
        del self._parser
        self._req = None
        self._queue.clear()
        self.tunnel_buffer = None
        self.on_close = None
        self.upstream = None
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.h2 is not None:
            self.h2.pause_writing()
        if self.upstream is not None:
            self.upstream.set_reading(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._admitted and self._clock.phase == IDLE:  # it takes its answer: not idle
            self._clock.since = self.loop.time()  # type: ignore[union-attr]
        if self.h2 is not None:
            self.h2.resume_writing()
        if self.upstream is not None:
            self.upstream.set_reading(True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._req = Request(self)
        self._req_in_progress = True
        self._head_raw = self._chunk  # the whole read: an upper bound of this head so far
        self._head_slack = self._slack  # of which the previous message may have had this much

    def on_url(self, url: bytes) -> None:
        req = self._req
        assert req is not None
        req.target += url
        if len(req.target) > self._max_url:
            raise Refused(414, "url_bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._req_in_progress:
            return  # a trailer field: never forwarded (the proxy frames the body itself)
        req = self._req
        assert req is not None
        k = _NAMES.get(name) or _name(name)
        req.headers.append((k, value))  # counted after the read or the head (module docstring)
        if k in _NOTED:
            _note(req, k, value)

    def on_headers_complete(self) -> None:
        req = self._req
        assert req is not None
        self._clock.phase = BUSY  # the route's timeouts apply from here
        p = self._parser
        method = p.get_method()
        req.method = _METHODS.get(method) or method.decode("ascii")
        version = req.version = self._version(len(method) + 1 + len(req.target))
        if version != "1.1" and version != "1.0":
            raise Refused(400 if version == "0.9" else 505, "bad_request")
        # RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding is faulty framing. A GET or HEAD body
        # has no meaning and is ignored by some servers: a smuggling vector.
        if (req.chunked or req.content_length > 0) and (
            (req.chunked and version == "1.0") or req.method in ("GET", "HEAD")
        ):
            raise Refused(400, "bad_request")
        if len(req.headers) > self._max_headers:
            raise Refused(431, "request_headers")
        limit = self._max_head
        if self._head_raw > limit and len(req.target) + head_size(req.headers) > limit:
            raise Refused(431, "request_head_bytes")  # a read with a whole head and more
        req.keep_alive = p.should_keep_alive()
        upgrade = req.upgrade = p.should_upgrade()
        if upgrade and req.chunked:
            raise Refused(400, "bad_request")  # see the module docstring
        if (
            req.hosts > 1
            or (req.hosts == 0 and version == "1.1")
            or (req.chunked and req.content_length >= 0)
        ):
            raise httptools.HttpParserError("bad host or framing")
        if req.host not in _GOOD_HOSTS or not req.target.startswith(b"/"):
            _check_host(req)
        if req.chunked or req.content_length > 0:
            req.body = RequestBody(self)
            if upgrade:
                self._upgrade_body = req.content_length
        elif self.active is None and not self._queue and self.fast is not None:
            self.active = req
            try:
                taken = self.fast(req)
            except Exception:
                self._failed(req)
                raise
            if taken:
                self._req_in_progress = False
                return
            self.active = None
        if len(self._queue) >= MAX_PIPELINED:
            raise Refused(429, "pipelined_requests")
        self._queue.append(req)
        self._req_in_progress = False
        if self.active is not None:
            self._pipeline_paused = True
            self._apply_reading()
        self._wake()

    def _version(self, line_end: int) -> str:
        """The version of the head just parsed; ``line_end``: where the request line's
        version would begin (with its space) if the head began the read (module docstring)."""
        if (
            self._head_raw == self._chunk  # the head began in this read,
            and self._head_slack == 0  # at its start (no message ended in it before)
            and self._read[line_end : line_end + 11] == b" HTTP/1.1\r\n"  # (compiled: no
        ):  # method call, as ``startswith`` with an offset would be)
            return "1.1"
        return self._parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        assert self._req is not None and self._req.body is not None
        self._framing = False
        self._req.body.feed(body)

    def on_chunk_header(self) -> None:
        self._framing = True
        self._framing_raw = 0

    def on_message_complete(self) -> None:
        self._framing = False
        self._slack = self._chunk  # a head that begins in this read follows this message
        req = self._req
        if req is not None and req.body is not None and not self._upgrade_body:
            req.body.end()

    # proxy-facing helpers
    def write(self, data: bytes) -> None:
        """A body chunk, after anything batched: with its head when that is still batched,
        else now (flow control sees it at once): :meth:`.upstream_conn.WriteBatch.write`."""
        if self.transport is not None and not self.transport.is_closing():
            assert self.batch is not None
            self.batch.write(self.transport, data)

    def write_chunk(self, data: bytes) -> None:
        """A response body chunk framed for a client that gets the body chunked (an empty
        one is skipped: it would end the body)."""
        if data:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def send(self, data: bytes) -> None:
        """Write at the end of this loop pass (a head, a whole small response): see
        :class:`~.upstream_conn.WriteBatch`, which drops it if the transport is closing by
        then: no second check here, once per response."""
        if self.transport is not None:
            assert self.batch is not None
            self.batch.send(self.transport, data)

    def complete(self) -> None:
        """The answer batched for this client is whole (:meth:`.upstream_conn.WriteBatch.complete`:
        on a quiet loop it goes now)."""
        if self.batch is not None:
            self.batch.complete()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            if self.batch is not None:
                self.batch.flush()
            self.transport.close()
            if self._admitted and self.transport.get_write_buffer_size():
                clock = self._clock  # what is left must go within client_idle_timeout
                clock.phase, clock.since = IDLE, self.loop.time()  # type: ignore[union-attr]

    @property
    def idle(self) -> bool:
        """No request being answered or queued (safe to close while draining)."""
        if self.h2 is not None:
            return self.h2.idle
        return self.active is None and not self._queue and self._req_in_progress is False

    def set_body_paused(self, paused: bool) -> None:
        self._body_paused = paused
        self._apply_reading()

    def set_upstream_paused(self, paused: bool) -> None:
        """The upstream cannot take more request body right now."""
        self._upstream_paused = paused
        self._apply_reading()

    def _apply_reading(self) -> None:
        want_paused = (
            self._body_paused
            or self._upstream_paused
            or self._pipeline_paused
            or self._deferred is not None
            or self._upgrade_wait
        )
        if want_paused != self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = want_paused
            if want_paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _after_upgrade(self, data: bytes) -> None:
        """Bytes after an upgrade request's head: its body first, the rest kept for the
        tunnel or the next request (module docstring)."""
        left = self._upgrade_body
        if left:
            req = self._req
            assert req is not None and req.body is not None
            body, data = data[:left], data[left:]
            self._upgrade_body = left - len(body)
            if body:
                req.body.feed(body)
            if self._upgrade_body:
                return
            req.body.end()
        assert self.tunnel_buffer is not None
        if data:
            self.tunnel_buffer.append(data)
        if not self._upgrade_wait:
            self._upgrade_wait = True
            self._apply_reading()

    def start_tunnel(self, transport: asyncio.Transport) -> None:
        """The upgrade was accepted (101): raw bytes both ways from now on."""
        for chunk in self.tunnel_buffer or ():
            transport.write(chunk)
        self.tunnel_buffer = None
        self.tunnel = transport
        self._upgrade_wait = False
        self._apply_reading()

    def _refused_upgrade(self) -> None:
        """The upstream answered the upgrade request without 101: HTTP/1.1 goes on, from the
        bytes read meanwhile, with a fresh parser (llhttp stops for good at an upgrade)."""
        buffered = self.tunnel_buffer or []
        self.tunnel_buffer = None
        self._upgrade_wait = False
        self._parser = httptools.HttpRequestParser(self)
        for chunk in buffered:
            if self.closed or self.tunnel_buffer is not None:
                break
            self.data_received(chunk)
        self._apply_reading()

    def _refuse(self, refused: Refusal) -> None:
        """Answer ``refused`` and close; after the requests before it when there are any
        (module docstring)."""
        req = self.active
        broken = self._req
        if broken is not None and broken.body is not None and not broken.body.complete:
            if broken is not req:  # a queued request's body is cut: it never runs
                if broken in self._queue:
                    self._queue.remove(broken)
            else:  # the request being answered lost the rest of its body: it ends here
                self._error(refused)
                return
        if req is not None or self._queue:
            self._deferred = refused
            self._apply_reading()
            return
        self._error(refused)

    def _error(self, refused: Refusal) -> None:
        """Write the refusal (unless a response already started) and close."""
        status, reason = refused
        self.guard.reject(reason)
        req = self.active
        if req is None or not req.started:
            if req is not None:
                req.started = True
            self.write(simple_response(status, _REASONS.get(status, b"bad request\n"), close=True))
        self.close()

    def _expired(self, head: bool) -> None:
        """The client's head or idle deadline passed (:class:`~.guard.ClientClock`)."""
        if self.closed:
            return
        if self.transport is not None and aborted_if_stalled(self.transport, head):
            return
        if self.h2 is not None:
            self.h2.expired(head)
            return
        if not head:
            self.close()  # a keep-alive connection nobody used
        elif self._req_in_progress:
            self._error((408, "request_head_timeout"))
        else:  # nothing of a request arrived: no answer, as HAProxy's http-ignore-probes
            self.guard.reject("request_head_timeout")
            self.close()

    def _next(self, req: Request) -> bool:
        """After ``req`` was answered: False when the connection is done (closed)."""
        if self.closed:
            return False
        if not req.keep_alive or (req.body is not None and not req.body.complete):
            self.close()
            return False
        if self._deferred is not None and not self._queue:
            self._error(self._deferred)
            return False
        if self._pipeline_paused:
            self._pipeline_paused = False
            self._apply_reading()
        if self.tunnel_buffer is not None:  # an upgrade request answered without 101
            self._refused_upgrade()
        if self.active is None and not self._queue:  # the next head (if it began) or idle
            clock = self._clock
            clock.phase = HEAD if self._req_in_progress else IDLE
            clock.since = self.loop.time()  # type: ignore[union-attr]
        return True

    def request_done(self, req: Request) -> None:
        """The fast path answered ``req`` (what ``_serve`` does after a handler)."""
        self.active = None
        if self._next(req) and self._queue:
            self._wake()

    async def finish_detached(self, req: Request, rest: Awaitable[None]) -> None:
        """A fast-path request that went on in a coroutine: await it, then ``request_done``."""
        try:
            await rest
        except Exception:
            self._failed(req)
            raise
        self.request_done(req)

    def _failed(self, req: Request) -> None:
        if not req.started:
            req.started = True
            self.write(simple_response(500, b"internal error\n", close=True))
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _serve(self) -> None:
        loop = self.loop
        assert loop is not None
        while not self.closed:
            if not self._queue or self.active is not None:  # a fast-path request runs
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            req = self._queue.popleft()
            self.active = req
            try:
                await self.handler(req)
            except Exception:
                self._failed(req)
                raise
            self.active = None
            if self.tunnel is not None or not self._next(req):
                return
