"""The upstream side of HTTP/1.1 on httptools (llhttp): one pooled connection to an endpoint.

Theory of operation: an :class:`UpstreamConnection` is an ``asyncio.Protocol`` that carries one
exchange at a time. ``begin`` writes the request head; the response head resolves
``headers_future``; body chunks go straight to the sink the proxy attached (the downstream
writer), or wait in ``_early`` until it does. The request body arrives through the
:class:`BodySink` interface, flow-controlled against the downstream connection. Deadlines use
one long-lived :class:`~.timers.LazyTimer` per connection (``arm``/``disarm``).

Time limits: :meth:`UpstreamConnection.arm` bounds the wait for the response head. While the
request body is still arriving (:meth:`UpstreamConnection.arm_upload`) only ``idle_timeout``
applies, to bytes in either direction: an upload slower than the route's ``timeout`` is fine
as long as it moves, and the ``timeout`` starts once the body is complete (as Envoy's route
timeout). An upload that stalls because the client stopped sending is ``client_stalled`` (the
endpoint is not to blame); one that stalls because the endpoint stopped reading is the
endpoint's timeout.

A response head (interim 1xx heads included) gets the byte and header-count limits of the
listener the request came in on (the defaults for probes-less callers: the in-process client,
mirrors); over them, or with a transfer-coding other than ``chunked``, the try fails as a
``reset`` (502) and the connection is closed. So does a status outside 100-599 (llhttp takes
any three digits; a 0 would read as "no final head yet"), and an interim response with a body (no
1xx has one; llhttp reads one after a 1xx other than 100, 102 and 103, which would reach the
client inside the final answer). A chunked body's trailer section (and any chunk-size line)
gets the same byte limit: over it, the exchange breaks off and the connection is closed (with
the head already sent, the client's connection closes too). The parser holds this protocol
through its callbacks: the reference is dropped when the connection is lost, so a half-parsed
head is freed at once, not by the cyclic garbage collector.

A response is framed exactly once. Bytes nobody asked for (anything on an idle pooled
connection, a second response or garbage after the one that answered the request) mean the
endpoint and the proxy no longer agree on where messages start: the connection is closed at
once and never reused (HAProxy drops such bytes too); an answer already complete still goes to
its client, nothing after it ever reaches anyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Protocol, cast
from weakref import WeakKeyDictionary

import httptools

from ..tables import Limits
from .timers import TIMER_SLACK, LazyTimer

Headers = list[tuple[bytes, bytes]]
DEFAULT_LIMITS: Final = Limits()


class Downstream(Protocol):
    """The client connection whose request an exchange carries (``http1.ServerConnection``):
    its limits bound the response head; it stops reading while the endpoint cannot take more."""

    @property
    def limits(self) -> Limits: ...

    def set_upstream_paused(self, paused: bool) -> None: ...


def head_size(headers: Headers, start_line: int = 16) -> int:
    """The size of a head with ``headers`` (and a start line of about ``start_line`` bytes) as
    the peer sent it, without optional whitespace: the exact count when a read carried more
    than the head."""
    return start_line + 2 + sum(len(k) + len(v) + 4 for k, v in headers)


FLUSH_AT: Final = 64 * 1024
"""A batched message for one transport that grows beyond this is written at once: a batch is
for small messages, and flow control (``pause_writing``, which stops reading a peer that does
not read) sees only what was written. uvloop reads a socket up to 32 times in one loop pass,
so HTTP/2 acknowledgements of a peer's PING flood would otherwise pile up for the pass."""


class WriteBatch:
    """Heads and whole small messages written during one loop pass, sent together at its end.

    Why: on loopback every send wakes the peer process, and a wake-up of a sleeping peer is the
    costliest part of a send. Sending a pass's messages back to back (instead of one between
    each request's Python work) lets a peer that is already awake take them without a new
    wake-up: about 4 us less kernel time per proxied request. Per transport the order stays
    that of the calls: anything written directly (tunnels) calls :meth:`flush` first, and so
    does closing a connection. Messages for the transport batched last are joined into one
    (pipelined answers; a head and the body chunks that follow it in the same pass, through
    :meth:`write`): one send each.

    A quiet loop (the pass before sent one message at most, as every pass does at a moderate
    request rate) has nothing to batch: there a driver's :meth:`complete` writes the pass's
    first message as soon as it is whole, before the driver's bookkeeping (metrics, the pool,
    the connection's next request) and the rest of the loop pass, which would otherwise delay
    it (about a fifth of an idle proxy's time per request, measured). A busy pass stays one
    batch.
    """

    __slots__ = ("_due", "_items", "_loop", "_quiet", "_sends")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[tuple[asyncio.Transport, bytes]] = []
        self._due = False  # the end of this pass is scheduled
        self._sends = 0  # messages sent in this pass
        self._quiet = False  # the pass before sent one message at most

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write ``data`` at the end of this loop pass (now, beyond :data:`FLUSH_AT`)."""
        self._sends += 1
        if not self._due:
            self._due = True
            self._loop.call_soon(self._pass_ended)
        items = self._items
        if items and items[-1][0] is transport:
            data = items[-1][1] + data
            items.pop()
        items.append((transport, data))
        if len(data) > FLUSH_AT:
            self.flush()

    def complete(self) -> None:
        """The message batched last is whole (nothing of it follows in this pass): on a quiet
        loop, when it is the pass's first, it is written now (class docstring)."""
        if self._quiet and self._sends == 1:
            self.flush()

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        """A body chunk: joined to the message batched last when that is for ``transport``
        (its head, sent together at the end of this pass), else written now, after
        everything batched (flow control sees it at once)."""
        items = self._items
        if items and items[-1][0] is transport:
            items[-1] = (transport, items[-1][1] + data)
            return
        self.flush()
        transport.write(data)

    def flush(self) -> None:
        """Write everything batched so far, in order."""
        items = self._items
        if items:
            self._items = []
            for transport, data in items:
                if not transport.is_closing():
                    transport.write(data)

    def _pass_ended(self) -> None:
        self._due = False
        self._quiet = self._sends <= 1
        self._sends = 0
        self.flush()


NAMES_KEPT: Final = 4096
NO_TOKENS: Final[frozenset[bytes]] = frozenset()
# Fields that never cross a proxy (RFC 9110 section 7.6.1), in either direction.
HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"expect"}
)  # fmt: skip
# Connection options that name no field to remove: hop-by-hop fields go anyway, and "close" is
# reserved as a field name (RFC 9110 section 7.6.1).
_NOT_NOMINATED: Final = HOP_BY_HOP | {b"close"}
_TOKENS: Final[dict[bytes, frozenset[bytes]]] = {}  # Connection values seen -> their tokens


def connection_tokens(value: bytes, seen: frozenset[bytes] = NO_TOKENS) -> frozenset[bytes]:
    """``seen`` and the header names a ``Connection`` value lists, lower case, beyond the
    hop-by-hop ones every forwarded message loses anyway: a proxy removes them from the message
    it forwards (RFC 9110 section 7.6.1), in either direction. Kept by value, as
    :func:`_lower` keeps names: nearly every ``Connection`` says ``keep-alive`` or ``close``,
    which add nothing, and then no set union is made."""
    tokens = _TOKENS.get(value)
    if tokens is None:
        tokens = frozenset(t.strip().lower() for t in value.split(b",")) - _NOT_NOMINATED
        if len(_TOKENS) >= NAMES_KEPT:
            _TOKENS.clear()
        _TOKENS[value] = tokens = tokens or NO_TOKENS
    return seen | tokens if tokens else seen


_NAMES: Final[dict[bytes, bytes]] = {}  # response header names as sent -> lower case (bounded)


def _lower(name: bytes) -> bytes:
    """A response header name not seen yet, in lower case. Kept, because endpoints send the
    same few names on every response: a dict lookup instead of a method call per header, and
    the kept name's hash (every set and dict that the proxy looks it up in) is computed once."""
    k = name.lower()
    if len(_NAMES) >= NAMES_KEPT:
        _NAMES.clear()
    _NAMES[name] = k
    return k


_BATCHES: WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = WeakKeyDictionary()


def write_batch(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    """The loop's :class:`WriteBatch` (one per loop; the in-process client may run its own)."""
    batch = _BATCHES.get(loop)
    if batch is None:
        batch = _BATCHES[loop] = WriteBatch(loop)
    return batch


class BodySink:
    """Where a body goes: ``write`` each chunk, ``finish`` once."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class UpstreamConnection(asyncio.Protocol, BodySink):
    """One pooled connection to an endpoint; one exchange at a time.

    ``headers_future`` resolves with the final response head. ``done`` (created only when
    someone waits for it) resolves once the whole body went to the sink; most small responses
    are ``finished`` before anyone asks. ``arm``/``disarm`` give the exchange a deadline.
    """

    __deletable__ = ("_parser",)  # freed at close (a compiled class must say so)
    __slots__ = ("__weakref__", "_after_upload", "_batch", "_complete", "_done", "_early",
                 "_expecting", "_framing", "_framing_raw", "_head_raw", "_head_ready", "_in_head",
                 "_loop", "_max_head", "_max_headers", "_may_upgrade", "_on_head", "_parser",
                 "_reading_paused", "_sink", "_timer", "_upload_idle", "_writing_paused",
                 "chunked_out", "client_stalled", "closed", "conn_tokens", "downstream", "failure",
                 "finished", "has_length", "head_count", "headers", "headers_future",
                 "keep_alive", "key", "last_activity", "on_lost", "received", "refused", "reused",
                 "status", "timed_out", "transport", "until_close", "upgraded")  # fmt: skip

    def __init__(self, key: str) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: WriteBatch | None = None
        self._parser: httptools.HttpResponseParser  # made with the connection (a protocol
        # whose connect fails is never connected, and must not hold itself through a parser)
        self.closed = False
        self._reading_paused = False  # by flow control: the client cannot take more yet
        self.reused = False
        self.refused = False  # an HTTP/2 stream the endpoint never processed (``h2_client``)
        self.status = 0
        self.headers: Headers = []
        self.head_count = 0  # the response head's lines in ``headers``; trailers follow them
        self.headers_future: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self.finished = False  # the body went to the sink completely
        self.failure: Exception | None = None  # the exchange broke off
        self.keep_alive = False
        self.has_length = False  # the response carries Content-Length
        self.conn_tokens = NO_TOKENS  # header names the response's Connection lists
        self.upgraded: bytes | None = None
        self.until_close = False
        self.chunked_out = False
        self.received = False
        self.last_activity = 0.0
        self.timed_out = False
        self.client_stalled = False  # timed out while the client had stopped sending the body
        self._upload_idle = 0.0  # the body is still arriving: idle_timeout guards it
        self._after_upload = 0.0  # the try's timeout, armed once the body is complete
        self._writing_paused = False
        self._timer: LazyTimer  # made with the connection
        self._in_head = False  # the final response head is not complete yet
        self._framing = False  # a chunk's size line (or the trailer section) is being read
        self._framing_raw = 0  # bytes read since, while no content came
        self._head_raw = 0  # bytes read since the request was sent, while in the head
        self._max_head = DEFAULT_LIMITS.request_head_bytes
        self._max_headers = DEFAULT_LIMITS.request_headers
        self._sink: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []
        self._complete = False
        self._expecting = False  # a request was sent and its final response is not complete
        self._may_upgrade = False
        self.downstream: Downstream | None = None  # request body source, paused with us
        self.on_lost: Callable[[], None] | None = None
        # The fast path's callback instead of ``headers_future``: called once, with None after
        # the read that brought the head (its body so far is buffered by then) or the error.
        self._on_head: Callable[[Exception | None], None] | None = None
        self._head_ready = False

    def begin(
        self,
        head: bytes,
        chunked: bool,
        downstream: Downstream | None,
        on_head: Callable[[Exception | None], None] | None = None,
        upgrade: bool = False,
    ) -> None:
        """Start an exchange: reset response state and write the request head. The response
        head resolves ``headers_future``, or calls ``on_head`` when given. Only a request that
        asked to ``upgrade`` may be answered 101 (else the try fails: 502)."""
        loop = self._loop
        assert loop is not None and self.transport is not None
        self.status = 0
        self.headers = []
        self.head_count = 0
        self._on_head = on_head
        self._head_ready = False
        self.headers_future = loop.create_future() if on_head is None else None
        self._done = None
        self.finished = False
        self.failure = None
        self.timed_out = False
        self.client_stalled = False
        self._upload_idle = 0.0
        self.chunked_out = chunked
        self.received = False
        self._sink = None
        self._early = []
        self._complete = False
        self._expecting = True
        self._may_upgrade = upgrade
        self._in_head = True
        self._head_raw = 0
        self._framing = False
        if downstream is not None:
            limits = downstream.limits
            self._max_head, self._max_headers = limits.request_head_bytes, limits.request_headers
        self.until_close = True  # until a Content-Length or Transfer-Encoding says otherwise
        self.has_length = False
        self.conn_tokens = NO_TOKENS
        self.downstream = downstream
        assert self._batch is not None
        self._batch.send(self.transport, head)

    def complete(self) -> None:
        """The request batched for this connection is whole (no body follows in this pass):
        :meth:`WriteBatch.complete`. (An HTTP/2 stream has no batch of its own: its frames go
        out with its connection's, at the end of the pass.)"""
        if self._batch is not None:
            self._batch.complete()

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

    def arm(self, timeout: float) -> None:
        """Abort the exchange (``timed_out``) unless :meth:`disarm` runs within ``timeout``."""
        self._timer.set(self._loop.time() + timeout)  # type: ignore[union-attr]

    def arm_upload(self, idle: float, after: float) -> None:
        """While the request body arrives: abort when no byte moves either way for ``idle``;
        once the body is complete (:meth:`finish`), ``arm(after)``. Idle counts from now (the
        head went out in this loop pass; a request without a body never reads the time
        for it)."""
        now = self._loop.time()  # type: ignore[union-attr]
        self.last_activity = now
        self._upload_idle = idle
        self._after_upload = after
        self._timer.set(now + idle)

    def disarm(self) -> None:
        self._timer.due = 0.0
        self._upload_idle = 0.0

    def _expired(self) -> None:
        if self.closed:
            return
        idle = self._upload_idle
        if idle:
            due = self.last_activity + idle
            if self._loop.time() + TIMER_SLACK < due:  # type: ignore[union-attr]
                self._timer.set(due)
                return
            self.client_stalled = not self._writing_paused
        self.timed_out = True
        self.abort()

    # BodySink: request body towards the endpoint
    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            return
        assert self._batch is not None
        self.last_activity = self._loop.time()  # type: ignore[union-attr]
        if self.chunked_out:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._batch.write(self.transport, data)  # after the head, with it if still batched

    def finish(self) -> None:
        if self.chunked_out and not self.closed and self.transport is not None:
            assert self._batch is not None
            self._batch.write(self.transport, b"0\r\n\r\n")
        if self._upload_idle:  # the request is complete: its timeout starts now
            self._upload_idle = 0.0
            self.arm(self._after_upload)

    @property
    def trailers(self) -> Headers:
        """The trailer fields of a chunked response (once it is complete)."""
        return self.headers[self.head_count :] if self.head_count else []

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

    def came_whole(self) -> bool:
        """True when the response is complete and no body chunk waits for a sink (the caller
        took them with :meth:`take_early`): it is ``finished`` without one."""
        if self._complete and not self._early:
            self._resolve_done()
        return self.finished

    def go_idle(self) -> bool:
        """The exchange ended: the connection drops its flow control before the pool keeps it.
        It reads again (its next response, the endpoint's close; paused, a reused connection
        would never read its answer), and the client no longer waits for the endpoint to take
        more of a request that is over. False when the endpoint has not taken all of that
        request yet (its side is full): the pool closes it rather than queue another request
        behind it, whose body no pause would hold back."""
        if self._reading_paused:
            self.set_reading(True)
        self.let_go()
        return not self._writing_paused

    def let_go(self) -> None:
        """The exchange is over for this connection (pooled, aborted or lost): a client it
        paused because the endpoint could not take more of the body reads again. Once, and at
        once: a retry's connection may pause the same client later, and must not be undone."""
        down, self.downstream = self.downstream, None
        if down is not None and self._writing_paused:
            down.set_upstream_paused(False)

    def set_reading(self, on: bool) -> None:
        if self.transport is not None and not self.closed and on == self._reading_paused:
            self._reading_paused = not on
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def abort(self) -> None:
        self.let_go()
        if self.transport is not None:
            self.transport.abort()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._loop = asyncio.get_running_loop()
        self._batch = write_batch(self._loop)
        self._timer = LazyTimer(self._loop, self._expired)
        self._parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._upload_idle or self._sink is not None:  # watched: an upload, a body
            self.last_activity = self._loop.time()  # type: ignore[union-attr]
        if self.upgraded is not None:
            if self._sink is not None:
                self._sink(data)
            else:
                self._early.append(data)
            return
        if not self._expecting:  # on an idle connection, or after the complete response
            self._drop()
            return
        if self._in_head:
            self._head_raw += len(data)
        elif self._framing:
            self._framing_raw += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = data[exc.args[0] :] if exc.args else b""
            self._set_headers()
        except httptools.HttpParserError as exc:
            if not self._complete:
                self._fail(ConnectionResetError(f"bad response: {exc}"))
                self.abort()
                return
            self._drop()  # a second response (or garbage) after the answer: the answer stands
        if self._in_head and (  # no end in sight
            self._head_raw > self._max_head or len(self.headers) > self._max_headers
        ):
            self._fail(ConnectionResetError("response head too large"))
            self.abort()
            return
        if self._framing and self._framing_raw > self._max_head:  # a trailer section (or a
            self._fail(ConnectionResetError("response trailers too large"))  # chunk-size line)
            self.abort()  # without end: llhttp would buffer the field being read
            return
        if self._head_ready:  # (``_deliver_head(None)`` inlined for the fast path)
            self._head_ready = False
            on_head = self._on_head
            if on_head is not None:
                self._on_head = None
                on_head(None)
                return
            fut = self.headers_future
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _drop(self) -> None:
        """Bytes nobody asked for arrived: never reuse this connection (module docstring)."""
        self.keep_alive = False
        self.closed = True  # the pool skips it from now on, before the loss is reported
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.let_go()
        self._timer.close()
        del self._parser  # the parser holds this protocol: free both now (module docstring)
        if self.on_lost is not None:
            self.on_lost()
            self.on_lost = None
        if self._complete:
            return  # the answer was whole before the connection went
        ended = self.upgraded is not None or (self.until_close and self.status >= 200)
        if ended and not self.finished and self.failure is None:
            self._complete = True
            if self._sink is not None:
                self._resolve_done()
            return
        self._fail(ConnectionResetError("upstream closed"))

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.downstream is not None:
            self.downstream.set_upstream_paused(True)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.downstream is not None:
            self.downstream.set_upstream_paused(False)

    def _fail(self, exc: Exception) -> None:
        """The exchange broke off. A head parsed in the same read was not delivered yet: the
        failure is delivered instead (a 502 rather than a head and a cut body)."""
        if not (self.finished or self._complete or self.failure is not None):
            self.failure = exc
            done = self._done
            if done is not None and not done.done():
                done.set_exception(exc)
                done.exception()
        self._deliver_head(exc)

    def _set_headers(self) -> None:
        self._head_ready = True  # delivered once this read is parsed

    def _deliver_head(self, exc: Exception | None) -> None:
        """Resolve ``headers_future`` or call ``on_head``, once per exchange."""
        self._head_ready = False
        on_head, self._on_head = self._on_head, None
        if on_head is not None:
            on_head(exc)
            return
        fut = self.headers_future
        if fut is not None and not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
                fut.exception()  # mark retrieved; the proxy may no longer be waiting

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._expecting:  # a second response after the one that answered
            raise httptools.HttpParserError("unsolicited response")
        k = _NAMES.get(name) or _lower(name)
        self.headers.append((k, value))  # counted after the read or the head
        if self.head_count and len(self.headers) - self.head_count > self._max_headers:
            raise httptools.HttpParserError("too many trailer fields")
        if k == b"content-length":
            self.has_length = True
            self.until_close = False
        elif k == b"transfer-encoding":
            if value.strip().lower() != b"chunked":  # a coding we would pass on undeclared
                raise httptools.HttpParserError("transfer-coding other than chunked")
            self.until_close = False
        elif k == b"connection":
            self.conn_tokens = connection_tokens(value, self.conn_tokens)

    def on_headers_complete(self) -> None:
        if not self._expecting:
            raise httptools.HttpParserError("unsolicited response")
        if len(self.headers) > self._max_headers:
            raise httptools.HttpParserError("too many response headers")
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # interim response: wait for the final one
            self.has_length = False
            self.conn_tokens = NO_TOKENS
            self.until_close = True
            return
        self._in_head = False
        if status < 100 or status > 599:  # llhttp takes any three digits
            raise httptools.HttpParserError("status outside 100-599")
        if status == 101 and not self._may_upgrade:
            raise httptools.HttpParserError("101 to a request without upgrade")
        if self._head_raw > self._max_head and head_size(self.headers) > self._max_head:
            raise httptools.HttpParserError("response head too large")
        self.status = status
        self.head_count = len(self.headers)
        self.keep_alive = self._parser.should_keep_alive()
        self._set_headers()

    def on_chunk_header(self) -> None:
        self._framing = True
        self._framing_raw = 0

    def on_body(self, body: bytes) -> None:
        self._framing = False
        if self._sink is not None:
            self._sink(body)
        elif self._in_head:  # llhttp reads a body after a 1xx other than 100, 102 and 103
            raise httptools.HttpParserError("interim response with a body")
        else:
            self._early.append(body)

    def on_message_complete(self) -> None:
        if self.status == 0 or self.status == 101:
            return  # end of an interim 1xx; after a 101 the tunnel runs until a side closes
        self._framing = False
        self._complete = True
        self._expecting = False
        if self._sink is not None:
            self._resolve_done()

    def _resolve_done(self) -> None:
        if self.finished or self.failure is not None:
            return
        self.finished = True
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)
