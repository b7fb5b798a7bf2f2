"""HTTP/2 towards an endpoint: the client half, on the sans-IO ``h2`` library.

Theory of operation
-------------------
An ``http2`` or ``grpc`` service's endpoints get :class:`H2Client` connections (h2c with prior
knowledge, or TLS with ALPN ``h2``), pooled by ``upstream/pool.py`` and shared by many requests
at once: each try is one stream, an :class:`H2Exchange`. An exchange *is* an
``UpstreamConnection`` to everything above the codec (the same response state, deadlines,
request body sink and ``headers_future``/``done``), so the request machine, its drivers and
the pool need not know which protocol the endpoint speaks; only the frames differ.

The request head the drivers build is HTTP/1.1 (``forward/heads.py``, one place for every
protocol); :func:`request_fields` turns it into HTTP/2 fields: the request line becomes
``:method``/``:path``, Host ``:authority``, the connection-specific fields are dropped (HTTP/2
forbids them) and every request says ``te: trailers`` (the proxy passes trailers on to
every caller, and gRPC servers insist on it). The response's ``:status`` and fields,
its DATA and its trailers fill the exchange as an HTTP/1.1 response would (trailers after
``head_count``). A response head, like HTTP/1.1's, is delivered once the whole read is
handled, so a small response arrives complete with its head (the fast path writes it in one
go).

Flow control, both ways, so memory stays bounded:

* request bodies: DATA is sent within the endpoint's windows; what does not fit waits in the
  exchange, with the limits responses to a client have (``h2lib.Budget``): an exchange's own
  (``h2lib.STREAM_HIGH_WATER``) and the connection's (``h2lib.CONNECTION_HIGH_WATER``, for
  its 100 exchanges), past which the callers' sides stop reading, as for HTTP/1.1;
* responses: received DATA is acknowledged (WINDOW_UPDATE) at once while the caller reads,
  and not while the caller's side is paused (``set_reading(False)``): the endpoint can send
  at most the stream's window (:data:`STREAM_WINDOW`) ahead. The connection's window is large
  (:data:`CONNECTION_WINDOW`) so a slow caller stalls only its own stream; a stream that ends
  (given up, reset) gives what nobody read back to the connection's window.

Limits (a hostile or broken endpoint): at most ``min(peer's MAX_CONCURRENT_STREAMS,
``:data:`MAX_STREAMS`)`` streams per connection; a response header list over
``MAX_HEADER_LIST_SIZE`` (the head limit, as for HTTP/1.1) is an ``h2`` protocol error, one
over the caller's listener limits fails the try (``reset``, 502); no server push
(``ENABLE_PUSH`` 0); a frame over the frame size, or anything ``h2`` calls a protocol error,
closes the connection with GOAWAY and fails its streams.

Refused work is retried as Envoy does: a stream the endpoint resets with REFUSED_STREAM, or one
above a GOAWAY's last stream id, was never processed; its try ends with ``refused``
set (the outcome ``refused-stream``). A connection that sent GOAWAY takes no new stream and
closes once its last stream ends. A stream on a connection that had carried others, lost
without a byte for it, is ``stale`` as a reused HTTP/1.1 connection is (one free retry).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

from ..tables import Limits
from . import h2lib
from .timers import LazyTimer
from .upstream_conn import (
    DEFAULT_LIMITS,
    HOP_BY_HOP,
    Downstream,
    Headers,
    UpstreamConnection,
    WriteBatch,
    head_size,
    write_batch,
)

log = logging.getLogger("meshgen.proxy")

MAX_STREAMS: Final = 100
STREAM_WINDOW: Final = 256 * 1024
CONNECTION_WINDOW: Final = 16 * 1024 * 1024
_ERR = h2lib.errors.ErrorCodes
_EV = h2lib.events
# The connection-specific fields (HTTP/2 forbids them, RFC 9113 section 8.2.2) and the Host
# (it becomes ``:authority``).
_NOT_SENT: Final = HOP_BY_HOP | {b"host"}


def request_fields(head: bytes, scheme: bytes) -> tuple[Headers, int, bytes]:
    """The HTTP/2 fields of an HTTP/1.1 request head built by ``forward/heads.py``, its
    ``content-length`` (-1: none; the body, if any, ends with the request) and what followed
    the head in ``head`` (a whole-message call's body). The head is this runtime's own
    rendering (one field per line, ``name: value``), never a peer's bytes."""
    end = head.find(b"\r\n\r\n")
    rest = head[end + 4 :] if end >= 0 else b""
    lines = (head[:end] if end >= 0 else head).split(b"\r\n")
    method, _, target = lines[0].partition(b" ")
    path = target.rpartition(b" ")[0]
    authority = b""
    length = -1
    fields: Headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        if name in _NOT_SENT:
            if name == b"host":
                authority = value
            continue
        if name == b"content-length":
            length = int(value)
        fields.append((name, value))
    pseudo = [(b":method", method), (b":scheme", scheme), (b":authority", authority),
              (b":path", path)]  # fmt: skip
    # The proxy passes trailers on to every caller; gRPC servers insist on being told.
    fields.append((b"te", b"trailers"))
    return pseudo + fields, length, rest


class H2Exchange(UpstreamConnection):
    """One try on one stream of an :class:`H2Client` (module docstring)."""

    __slots__ = ("_end_pending", "_ended", "_out", "_out_size", "_reading", "_unacked",
                 "client", "id")  # fmt: skip

    def __init__(self, client: H2Client, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(client.key)
        self.client = client
        self.id = 0
        self._loop = loop
        self._timer = LazyTimer(loop, self._expired)
        self.reused = client.used
        self.keep_alive = False  # a stream is never pooled: its connection is
        self._out: deque[bytes] = deque()
        self._out_size = 0
        self._end_pending = False  # the request ends once ``_out`` is sent
        self._ended = False  # END_STREAM sent
        self._reading = True
        self._unacked = 0

    def begin(
        self,
        head: bytes,
        chunked: bool,
        downstream: Downstream | None,
        on_head: Callable[[Exception | None], None] | None = None,
        upgrade: bool = False,
    ) -> None:
        """Open the stream with the request's fields (and the body that came with ``head``:
        a whole-message call's). A request without a body, or whose body came whole, ends
        with it; otherwise :meth:`write`/:meth:`finish` send the rest."""
        loop = self._loop
        assert loop is not None
        self._on_head = on_head
        self.headers_future = loop.create_future() if on_head is None else None
        self._expecting = True
        self._in_head = True
        self.downstream = downstream
        if downstream is not None:
            limits = downstream.limits
            self._max_head, self._max_headers = limits.request_head_bytes, limits.request_headers
        self.last_activity = loop.time()
        fields, length, body = request_fields(head, self.client.scheme)
        ends = length == len(body) if length >= 0 else not chunked
        self.client.open(self, fields, ends and not body)
        if body:
            self.write(body)
            if ends:
                self.finish()
        elif ends:
            self._ended = True

    # BodySink: the request body, within the endpoint's windows
    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.last_activity = self._loop.time()  # type: ignore[union-attr]
        self._out.append(data)
        self._out_size += len(data)
        self.client.pump(self, len(data))

    def finish(self) -> None:
        if not self._ended:
            self._end_pending = True
            self.client.pump(self)
        if self._upload_idle:  # the request is complete: its timeout starts now
            self._upload_idle = 0.0
            self.arm(self._after_upload)

    @property
    def pending(self) -> int:
        """Request bytes waiting for the endpoint's windows (``h2lib.Holder``)."""
        return self._out_size

    @property
    def wanted(self) -> bool:
        """Nothing waits, the endpoint reads and its windows have room (``h2lib.Holder``)."""
        client = self.client
        blocked = client._write_paused or client.closed
        return h2lib.wanted(client.h2, self.id, bool(self._out), blocked)

    def hold(self, on: bool) -> None:
        """The caller's side stops reading the body (``on``) or reads again (the connection's
        ``h2lib.Budget``)."""
        self._writing_paused = on
        if self.downstream is not None:
            self.downstream.set_upstream_paused(on)

    def set_reading(self, on: bool) -> None:
        self._reading = on
        if on and self._unacked and self._sink is not None:
            n, self._unacked = self._unacked, 0
            self.client.acknowledge(n, self.id)

    def abort(self) -> None:
        """Give up the try: the stream is reset (CANCEL), the connection stays."""
        self.let_go()  # (a stream that ended may still hold its client: the pool discards it)
        if self.closed:
            self._give_back()
            return
        self.client.cancel(self)
        self.gone(ConnectionResetError("stream cancelled"))

    def _give_back(self) -> None:
        """The stream is over: what it received and nobody read goes back to the connection's
        window (kept, each such stream cut the window for good: 82 streams of 200 KiB
        cancelled while their callers did not read stalled the whole connection)."""
        n, self._unacked = self._unacked, 0
        if n:
            self.client.acknowledge(n, self.id)

    # ---- what the connection reports -------------------------------------------------------
    def response(self, headers: Headers) -> bool:
        """The response head; False when it is over the caller's limits or its status is not
        one of 200-599 (``h2`` passes any ``:status`` on): the try fails."""
        self.received = True
        status = 0
        fields: Headers = []
        for k, v in headers:
            if k == b":status":
                status = int(v) if len(v) == 3 and v.isdigit() else 0
            elif k[:1] != b":":
                fields.append((k, v))
                if k == b"content-length":
                    self.has_length = True
        if len(fields) > self._max_headers or head_size(fields) > self._max_head:
            return False
        if not 200 <= status <= 599:  # (interim heads are events of their own)
            return False
        self.status = status
        self.headers = fields
        self.head_count = len(fields)
        self._in_head = False
        return True

    def data(self, data: bytes, flow_controlled: int) -> None:
        self.received = True
        self.last_activity = self._loop.time()  # type: ignore[union-attr]
        if data:
            self.on_body(data)
        if self._reading and self._sink is not None:
            self.client.acknowledge(flow_controlled, self.id)
        else:  # until a sink takes it, at most the stream's window waits here
            self._unacked += flow_controlled

    def start_body(self, sink: Callable[[bytes], None]) -> None:
        super().start_body(sink)
        self.set_reading(self._reading)

    def came_whole(self) -> bool:
        """Never: a stream gives its flow-control credit back once a sink takes its body
        (:meth:`start_body`), even a body that is already complete."""
        return False

    def add_trailers(self, headers: Headers) -> None:
        self.headers.extend((k, v) for k, v in headers if k[:1] != b":")

    def ended(self) -> None:
        """The response is complete (END_STREAM); a request body still waiting is not sent."""
        self.closed = True
        self.client.budget.leave(self)
        self._out.clear()
        self._out_size = 0
        self._complete = True
        self._expecting = False
        if self._sink is not None:
            self._resolve_done()

    def gone(self, exc: Exception) -> None:
        """The stream ended without a complete response (reset, GOAWAY, connection lost)."""
        self.closed = True
        self.let_go()
        self._give_back()
        self.client.budget.leave(self)
        self._out.clear()
        self._out_size = 0
        self._fail(exc)


class H2Client(asyncio.Protocol):
    """One HTTP/2 connection to an endpoint, carrying many exchanges (module docstring)."""

    __slots__ = ("_batch", "_flood", "_heads", "_loop", "_reading", "_write_paused", "budget",
                 "closed", "going_away", "h2", "key", "max_streams", "on_lost", "scheme",
                 "streams", "transport", "used")  # fmt: skip

    def __init__(
        self,
        key: str,
        scheme: bytes,
        max_streams: int = MAX_STREAMS,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.key = key
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.streams: dict[int, H2Exchange] = {}
        self.closed = False
        self.going_away = False  # GOAWAY came: no new stream
        self.used = False  # has carried a stream
        self.max_streams = max_streams  # until the endpoint's SETTINGS say otherwise
        self.on_lost: Callable[[], None] | None = None
        self._heads: list[H2Exchange] = []  # heads of this read, delivered after it
        self._batch: WriteBatch | None = None  # the loop's (made with the connection)
        self._write_paused = False  # the endpoint does not read (transport's callbacks)
        self._reading = h2lib.Reading(self._take)
        self._flood = h2lib.FloodGuard()
        self.budget = h2lib.Budget(self._sources)
        codes = h2lib.settings.SettingCodes
        self.h2 = h2lib.new_connection(
            True,
            {
                codes.ENABLE_PUSH: 0,
                codes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                codes.MAX_HEADER_LIST_SIZE: limits.request_head_bytes,
            },
            limits.request_head_bytes,
            CONNECTION_WINDOW,
        )
        h2lib.finish_after_goaway(self.h2)

    @property
    def available(self) -> bool:
        """Open, not going away, and below its stream limit."""
        return not (self.closed or self.going_away) and len(self.streams) < self.max_streams

    def exchange(self) -> H2Exchange:
        """A new try on this connection (its stream opens with ``begin``)."""
        assert self._loop is not None
        ex = H2Exchange(self, self._loop)
        self.used = True
        return ex

    # ---- frames out ------------------------------------------------------------------------
    def open(self, ex: H2Exchange, fields: Headers, end: bool) -> None:
        """HEADERS for ``ex`` on a new stream; a refusal fails it (``refused``)."""
        if not self.available:
            ex.refused = True
            ex.gone(ConnectionResetError("connection going away"))
            return
        sid = self.h2.get_next_available_stream_id()
        ex.id = sid
        try:
            self.h2.send_headers(sid, fields, end_stream=end)
        except h2lib.exceptions.TooManyStreamsError as exc:
            ex.refused = True
            ex.gone(ConnectionResetError(str(exc)))
            return
        except (h2lib.exceptions.H2Error, ValueError, TypeError) as exc:
            ex.gone(ConnectionResetError(f"request not sendable over HTTP/2: {exc}"))
            return
        self.streams[sid] = ex
        self._flush()

    def _sources(self) -> list[H2Exchange]:
        """The exchanges whose caller still sends a body (``budget``)."""
        return [ex for ex in self.streams.values() if ex.downstream is not None]

    def pump(self, ex: H2Exchange, grew: int = 0) -> None:
        """Send what ``ex`` has waiting (``grew`` bytes more than the last pump), within the
        windows, and tell the budget; then END_STREAM if asked."""
        if self.closed or ex.id not in self.streams:
            return
        h2 = self.h2
        out = ex._out
        size = ex._out_size
        try:
            if not self._write_paused:
                ex._out_size -= h2lib.send_within_windows(h2, ex.id, out, self._flood)
            if not out and ex._end_pending:
                ex._end_pending = False
                ex._ended = True
                h2.end_stream(ex.id)
        except h2lib.exceptions.H2Error as exc:  # the stream closed meanwhile
            log.debug("http2 upstream stream %d: %s", ex.id, exc)
            out.clear()
            ex._out_size = 0
        self.budget.changed(ex, grew + ex._out_size - size)
        self._flush()

    def acknowledge(self, n: int, stream_id: int) -> None:
        if n and not self.closed:
            try:
                self.h2.acknowledge_received_data(n, stream_id)
            except h2lib.exceptions.H2Error:  # the stream closed meanwhile: connection window
                self.h2.increment_flow_control_window(n)
            self._flush()

    def cancel(self, ex: H2Exchange) -> None:
        """Reset ``ex``'s stream (the try is given up)."""
        if self.streams.pop(ex.id, None) is not None:
            self._reset(ex.id, _ERR.CANCEL)
            self._idle_check()

    def _reset(self, stream_id: int, code: int) -> None:
        if not self.closed:
            try:  # (its frames in flight are free)
                h2lib.reset_stream(self.h2, stream_id, code, self._flood)
            except h2lib.exceptions.H2Error:  # closed already
                return
            self._flush()

    def _flush(self) -> None:
        """Queue what ``h2`` has to send; the loop pass's frames go out in one write
        (``WriteBatch``: requests of many callers share a send)."""
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            assert self._batch is not None
            self._batch.send(self.transport, data)  # large: written now (FLUSH_AT)

    def _close_transport(self) -> None:
        """Close after what is queued went out."""
        if self.transport is not None:
            assert self._batch is not None
            self._batch.flush()
            self.transport.close()

    # ---- frames in -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self._batch = write_batch(self._loop)
        self._flush()  # the preface

    def data_received(self, data: bytes) -> None:
        if not self.closed:
            assert self.transport is not None
            self._reading.feed(self.transport, data)

    def _take(self, data: bytes) -> bytes:
        """Work through a read's frames; returns those for a later pass (:class:`h2lib.Reading`)."""
        if self.closed:
            return b""
        try:
            events, rest = h2lib.receive(self.h2, data, self._flood)
        except (h2lib.exceptions.H2Error, ValueError) as exc:
            self._broken(f"protocol error: {exc}")
            return b""
        for event in events:
            if self.closed:
                break
            self._event(event)
        heads, self._heads = self._heads, []
        for ex in heads:
            ex._deliver_head(None)
        self._flush()
        return b"" if self.closed else rest

    def _event(self, event: object) -> None:
        if isinstance(event, _EV.DataReceived):
            ex = self.streams.get(event.stream_id)
            n = event.flow_controlled_length or 0
            if ex is None:
                self.acknowledge(n, event.stream_id)
            else:
                ex.data(event.data or b"", n)
        elif isinstance(event, _EV.ResponseReceived):
            ex = self.streams.get(event.stream_id)
            if ex is not None:
                if ex.response(event.headers or []):
                    self._heads.append(ex)
                else:
                    self.cancel(ex)
                    ex.gone(ConnectionResetError("bad response head (limits, :status)"))
        elif isinstance(event, _EV.TrailersReceived):
            ex = self.streams.get(event.stream_id)
            if ex is not None:
                ex.add_trailers(event.headers or [])
        elif isinstance(event, _EV.StreamEnded):
            ex = self.streams.pop(event.stream_id, None)
            if ex is not None:
                if not ex._ended:  # answered before the request ended: stop sending it
                    self._reset(event.stream_id, _ERR.NO_ERROR)
                ex.ended()
                self._idle_check()
        elif isinstance(event, _EV.StreamReset):
            ex = self.streams.pop(event.stream_id, None)
            if ex is not None:
                ex.refused = event.error_code == _ERR.REFUSED_STREAM
                ex.gone(ConnectionResetError(f"stream reset ({event.error_code!r})"))
                self._idle_check()
        elif isinstance(event, _EV.WindowUpdated):
            if event.stream_id:
                ex = self.streams.get(event.stream_id)
                if ex is not None:
                    self.pump(ex)
            else:
                h2lib.pump_each(self.h2, self.streams.values(), self.pump)
        elif isinstance(event, _EV.RemoteSettingsChanged):
            peer = self.h2.remote_settings.max_concurrent_streams
            self.max_streams = min(MAX_STREAMS, peer)
            h2lib.pump_each(self.h2, self.streams.values(), self.pump)
        elif isinstance(event, _EV.ConnectionTerminated):
            self._goaway(event.last_stream_id or 0)

    def _goaway(self, last_stream_id: int) -> None:
        """The endpoint goes away: streams above ``last_stream_id`` were never processed
        (refused, retried elsewhere); the others may finish."""
        self.going_away = True
        for sid in [s for s in self.streams if s > last_stream_id]:
            ex = self.streams.pop(sid)
            ex.refused = True
            ex.gone(ConnectionResetError("GOAWAY: stream not processed"))
        self._idle_check()

    def _idle_check(self) -> None:
        if self.going_away and not self.streams:
            self._close_transport()

    def _broken(self, why: str) -> None:
        log.info("http2 upstream %s: %s", self.key, why)
        self._flush()
        if self.transport is not None:
            assert self._batch is not None
            self._batch.flush()  # the GOAWAY, if the connection can still take it
            self.transport.abort()
        self._lost(why)

    def _lost(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        streams, self.streams = self.streams, {}
        for ex in streams.values():
            ex.gone(ConnectionResetError(why))
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost("upstream closed")

    def pause_writing(self) -> None:
        """The endpoint does not read: send no more DATA, and read nothing more, so the
        acknowledgements a read makes (PING, SETTINGS) cannot pile up unsent."""
        self._write_paused = True
        if self.transport is not None:
            self._reading.block(self.transport)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None:
            self._reading.unblock(self.transport)
        for ex in list(self.streams.values()):
            self.pump(ex)

    def close(self) -> None:
        """Close the connection (GOAWAY NO_ERROR); its streams fail."""
        if not self.closed:
            self.h2.close_connection()
            self._flush()
            self._close_transport()
            self._lost("closed")
