"""The HTTP/2 library: ``jh2`` when it is installed (the same API as ``h2``, compiled), else
``h2``. Every HTTP/2 module of the runtime imports the library from here, so the choice is
made once; type checking always sees ``h2`` (``jh2`` ships the same names)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from hyperframe.frame import Frame

if TYPE_CHECKING:
    from h2 import config, connection, errors, events, exceptions, settings
    from h2.stream import StreamState
else:
    try:
        from jh2 import config, connection, errors, events, exceptions, settings
        from jh2.stream import StreamState
    except ImportError:
        from h2 import config, connection, errors, events, exceptions, settings
        from h2.stream import StreamState

__all__ = [
    "Budget",
    "ControlFlood",
    "FloodGuard",
    "Reading",
    "config",
    "connection",
    "errors",
    "events",
    "exceptions",
    "finish_after_goaway",
    "new_connection",
    "pump_each",
    "receive",
    "reset_stream",
    "send_within_windows",
    "settings",
    "wanted",
]


DEFAULT_WINDOW = 65535


class FrameTooLarge(ValueError):
    """A frame announced more than the frame size (the connection ends: FRAME_SIZE_ERROR)."""


def new_connection(
    client_side: bool, initial: dict[settings.SettingCodes, int], header_list: int, window: int
) -> connection.H2Connection:
    """An ``h2`` connection announcing the settings ``initial``, its preface queued, whose
    decoder refuses a header list over ``header_list`` from the first HEADERS frame (``h2``
    applies the setting only once the peer acknowledged it), with a connection window of
    ``window`` (the streams' own stay as announced)."""
    conn = connection.H2Connection(
        config.H2Configuration(client_side=client_side, header_encoding=None)
    )
    conn.local_settings = settings.Settings(client=client_side, initial_values=initial)
    conn.decoder.max_header_list_size = header_list
    conn.initiate_connection()
    conn.increment_flow_control_window(window - DEFAULT_WINDOW)
    return conn


FRAMES_PER_PASS: Final = 256
"""Frames handed to ``h2`` in one event-loop pass (:func:`receive`); the rest of a read waits
for the next pass, with the connection's reading paused (:class:`Reading`). ``h2`` takes ~40
us a frame, DATA of one byte too, which no budget charges on an open stream: one 256 KiB read
of such frames held the loop 1.1 s, and uvloop reads a socket up to 32 times in a pass, so
one client's 10 streams of 64 KiB in one-byte frames held every other connection for 27 s
(HAProxy 2.6: 8 ms, Envoy 1.40: 1 s; bench/h2_dribble.py). 256 frames are ~10 ms; a read of
16 KiB frames never meets the limit. The control-frame budget is checked after each pass."""
CONTROL_BURST: Final = 1000
CONTROL_RATE: Final = 100.0
"""Frames that cost work but carry nothing of a request or response (:func:`_flood_cost`):
PING and SETTINGS (``h2`` answers each), a PING acknowledgement nobody asked for, a PRIORITY
frame of its own (one in a HEADERS frame is free), a DATA frame with no data that does not end
its stream, a WINDOW_UPDATE beyond :data:`UPDATES_PER_FRAME`, any frame ``h2`` takes
without reporting it (DATA, HEADERS or RST_STREAM on a closed stream, ALTSVC to a server) and
an unknown frame or unasked SETTINGS acknowledgement. A burst of
:data:`CONTROL_BURST`, then :data:`CONTROL_RATE` a second; past that the peer is flooding
(CVE-2019-9512, -9513, -9515, -9518): GOAWAY ENHANCE_YOUR_CALM and the
connection closes, as Envoy's flood limits do. ``h2`` takes about 30 us a frame in Python: a
peer sending PINGs without reading the answers held the event loop for 18 s (every listener
with it) until the socket buffers filled."""


UPDATES_PER_FRAME: Final = 2
"""WINDOW_UPDATE frames a peer may send, free, for each DATA frame sent to it and each head it
sent (one for the stream's window, one for the connection's), as Envoy's
``max_inbound_window_update_frames_per_data_frame_sent`` allows them; past that they are part
of a flood: 375,000 updates of the connection's window in 5 s held the event loop for 9.7 s."""
RESET_CREDIT: Final = 4
"""Frames on closed streams other than DATA a peer may send, free, for each stream this side
resets: its trailers and its own RST_STREAM may be in flight, which ``h2`` ignores (RFC 9113
sections 5.4.2, 6.4). At most :data:`CONTROL_BURST` are kept, so a peer that gets streams
reset buys no unbounded flood; ``h2``'s own resets (a frame on a stream the peer closed) earn
none. Its DATA in flight is bounded by the stream's window instead (:data:`IN_FLIGHT_CAP`)."""
IN_FLIGHT_CAP: Final = 256 * 1024
"""DATA bytes on closed streams a peer may send, free: each stream this side resets adds what
the peer could still send on it (the window it had left), at most this much kept (an
endpoint's stream window): what one open stream allows. A gRPC endpoint streaming small
messages sends a DATA frame a message, so a cancelled stream has hundreds of frames in flight
(measured through the runtime: 170-700 a reset on average, up to 862 in one read); a count of
frames a reset (32 before) cut such a connection off with ENHANCE_YOUR_CALM about once a
second, failing its other streams."""


class ControlFlood(ValueError):
    """The peer sent control frames past its budget (the connection ends: GOAWAY queued)."""


class FloodGuard:
    """One connection's budget of control frames (a token bucket, see :data:`CONTROL_RATE`),
    and the WINDOW_UPDATE frames the peer may send without cost (:data:`UPDATES_PER_FRAME`).
    ``preface``: bytes the peer sends before its first frame (a client's connection preface)."""

    __slots__ = ("_head", "_kind", "_rest", "_size", "credit", "data", "ignored", "in_flight",
                 "stamp", "tokens")  # fmt: skip

    def __init__(self, preface: int = 0) -> None:
        self.tokens = float(CONTROL_BURST)
        self.stamp = time.monotonic()
        self.credit = 0
        self.ignored = 0  # frames on closed streams still free (RESET_CREDIT)
        self.in_flight = 0  # DATA bytes on closed streams still free (IN_FLIGHT_CAP)
        self.data = 0  # bytes of the DATA frames counted by frames() since _flood_cost
        self._size = preface  # the length of the frame being read
        self._kind = -1  # the type of the frame being read (-1: the preface, or none)
        self._rest = preface  # its bytes still to come
        self._head = b""  # a frame header split between reads

    def frames(self, data: bytes, limit: int) -> tuple[dict[int, int], int]:
        """How many frames of each type end in the part of ``data`` (the peer's next bytes)
        that ``h2`` takes in this pass, and that part's length: all of ``data``, or up to the
        end of the ``limit``-th frame that ends in it (``limit`` >= 1, so never none of it).
        A frame ends once all of it is in, as ``h2`` works through a frame then; by type, a
        header block counts once, as HEADERS, by the frame that ends it, and the DATA frames'
        bytes are added to ``data``. Counted from the frame headers: ``h2`` reports no event
        for some frames, yet works through each (:func:`_flood_cost`)."""
        counts: dict[int, int] = {}
        n, i, ended = len(data), 0, 0
        if self._head:
            i = 9 - len(self._head)
            head = self._head + data[:i]
            if len(head) < 9:
                self._head = head
                return counts, n
            self._head = b""
            self._kind = _counted_as(head[3], head[4])
            self._rest = self._size = int.from_bytes(head[:3], "big")
        while i + self._rest <= n:
            i += self._rest
            if i:  # (at 0: the frame that ended with the last read, counted then)
                ended += 1
                if self._kind >= 0:
                    counts[self._kind] = counts.get(self._kind, 0) + 1
                    if self._kind == _DATA:
                        self.data += self._size
            if i + 9 > n or ended == limit:
                self._head = data[i:] if ended < limit else b""
                self._kind, self._rest = -1, 0
                return counts, i if ended == limit else n
            self._kind = _counted_as(data[i + 3], data[i + 4])
            self._rest = self._size = int.from_bytes(data[i : i + 3], "big")
            i += 9
        self._rest -= n - i
        return counts, n

    def earn(self, frames: int) -> None:
        """``frames`` DATA frames were sent, or heads received: the peer may answer them with
        window updates (at most twice :data:`CONTROL_BURST` of them kept for later)."""
        self.credit = min(2 * CONTROL_BURST, self.credit + UPDATES_PER_FRAME * frames)

    def reset_sent(self, window: int) -> None:
        """This side reset a stream the peer could still send ``window`` bytes of DATA on:
        DATA frames on closed streams carrying that many bytes more are free (at most
        :data:`IN_FLIGHT_CAP` kept), and :data:`RESET_CREDIT` other frames (at most
        :data:`CONTROL_BURST` kept)."""
        self.ignored = min(CONTROL_BURST, self.ignored + RESET_CREDIT)
        self.in_flight = min(IN_FLIGHT_CAP, self.in_flight + window)

    def spend(self, frames: int) -> bool:
        """Take ``frames`` from the budget; False once it is overdrawn."""
        now = time.monotonic()
        self.tokens = min(CONTROL_BURST, self.tokens + (now - self.stamp) * CONTROL_RATE) - frames
        self.stamp = now
        return self.tokens >= 0


def receive(
    conn: connection.H2Connection, data: bytes, flood: FloodGuard
) -> tuple[list[events.Event], bytes]:
    """``conn.receive_data`` of the part of ``data`` in which at most
    :data:`FRAMES_PER_PASS` frames end: ``h2``'s events, and the rest of ``data``, which
    waits for the next pass of the event loop (``b""``: none; :class:`Reading`). Two
    refusals end the connection (GOAWAY queued): a frame whose header announces more than
    the frame size, at once (:class:`FrameTooLarge`: ``h2`` would buffer all of its
    announced 16 MiB first), and control frames past ``flood``'s budget
    (:class:`ControlFlood`). Raises ``h2``'s errors as it does."""
    frames, taken = flood.frames(data, FRAMES_PER_PASS)
    rest = b""
    if taken < len(data):
        data, rest = data[:taken], data[taken:]
    received = conn.receive_data(data)
    if pending_frame(conn) > conn.max_inbound_frame_size:
        conn.close_connection(error_code=errors.ErrorCodes.FRAME_SIZE_ERROR)
        raise FrameTooLarge("a frame over the frame size")
    cost = _flood_cost(received, flood, frames)
    if cost > 0 and not flood.spend(cost):
        conn.close_connection(error_code=errors.ErrorCodes.ENHANCE_YOUR_CALM)
        raise ControlFlood(
            "frames past the budget (a flood of frames that carry nothing of a request)"
        )
    return received, rest


class Reading:
    """A connection's reading, paused for either of two reasons and resumed once neither
    holds: the peer does not read what this side writes (:meth:`block`, from
    ``pause_writing``: the acknowledgements a read makes, PING and SETTINGS, must not pile
    up unsent), or part of a read waits for a later pass of the event loop (:meth:`feed`:
    :func:`receive` takes :data:`FRAMES_PER_PASS` frames a pass, and uvloop's read loop
    stops only on a pause). ``take`` works through bytes and returns those that wait. One
    for each protocol that reads HTTP/2: client connections, endpoint connections and the
    gRPC health probe."""

    __slots__ = ("_backlog", "_blocked", "_take", "_transport")

    def __init__(self, take: Callable[[bytes], bytes]) -> None:
        self._take = take
        self._backlog = b""  # bytes read, for a later pass, reading paused
        self._transport: asyncio.Transport | None = None  # (while they wait)
        self._blocked = False  # the peer does not read

    def feed(self, transport: asyncio.Transport, data: bytes) -> None:
        """A read, worked through now, or after the bytes that wait (it came in before the
        pause took)."""
        if self._backlog:
            self._backlog += data
            return
        rest = self._take(data)
        if rest:
            self._backlog, self._transport = rest, transport
            transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._next_pass)

    def _next_pass(self) -> None:
        transport, data = self._transport, self._backlog
        assert transport is not None
        self._backlog, self._transport = b"", None
        try:
            self.feed(transport, data)
        except BaseException:
            # As the loop does when ``data_received`` raises: else the connection would stay
            # open, its reading paused, until an idle timer ends it.
            transport.abort()
            raise
        if not (self._backlog or self._blocked or transport.is_closing()):
            transport.resume_reading()

    def block(self, transport: asyncio.Transport) -> None:
        """The peer does not read: read nothing more from it."""
        if not self._blocked:
            self._blocked = True
            transport.pause_reading()

    def unblock(self, transport: asyncio.Transport) -> None:
        """The peer reads again: so does this side, unless bytes wait for a later pass
        (the pass that takes the last of them resumes)."""
        if self._blocked:
            self._blocked = False
            if not (self._backlog or transport.is_closing()):
                transport.resume_reading()


_COSTLY: Final = (
    events.PingReceived,
    events.PingAckReceived,
    events.RemoteSettingsChanged,
    events.SettingsAcknowledged,
    events.PriorityUpdated,
    events.UnknownFrameReceived,
)
_HEADS: Final = (events.RequestReceived, events.ResponseReceived, events.TrailersReceived)
_BLOCKS: Final = (*_HEADS, events.InformationalResponseReceived)
_DATA: Final = 0x0  # frame types
_HEADERS: Final = 0x1
_RST_STREAM: Final = 0x3
_WINDOW_UPDATE: Final = 0x8
_CONTINUATION: Final = 0x9
_ALTSVC: Final = 0xA
_END_HEADERS: Final = 0x4


def _counted_as(kind: int, flags: int) -> int:
    """The type a frame is counted as by :meth:`FloodGuard.frames`: a header block once, as
    HEADERS, by the frame that ends it (where ``h2`` reports it); -1: not counted."""
    if kind in (_HEADERS, _CONTINUATION):
        return _HEADERS if flags & _END_HEADERS else -1
    return kind


def _flood_cost(received: list[events.Event], flood: FloodGuard, frames: dict[int, int]) -> int:
    """How many of the ``frames`` (counts by type) and their events count against the budget
    (:data:`CONTROL_RATE`). ``h2`` reports nothing for DATA, HEADERS and RST_STREAM frames
    on a closed stream, nor for an ALTSVC frame to a server, yet works through each (a flood
    of 200,000 RST_STREAM or 1-byte DATA frames held the event loop for 3.6 s and 8.7 s,
    pure runtime): each costs one unless it brought its event (a peer's resets have a budget
    of their own) or it may have been in flight on a stream this side reset: DATA within
    ``flood``'s bytes (:data:`IN_FLIGHT_CAP`; a frame counts at least one), other frames
    within its frames (:data:`RESET_CREDIT`). WINDOW_UPDATE frames cost beyond ``flood``'s
    credit."""
    data = frames.get(_DATA, 0)
    silent = sum(frames.get(kind, 0) for kind in (_HEADERS, _RST_STREAM, _ALTSVC))
    size, flood.data = flood.data, 0
    cost = heads = 0
    for event in received:
        if isinstance(event, events.DataReceived):
            data -= 1
            size -= event.flow_controlled_length
            if not event.data and event.stream_ended is None:
                cost += 1
        elif isinstance(event, _COSTLY):
            cost += 1
        elif isinstance(event, _BLOCKS):
            silent -= 1
            if event.priority_updated is not None:
                cost -= 1  # its PriorityUpdated came in the HEADERS frame
            if isinstance(event, _HEADS):
                heads += 1
        elif isinstance(event, events.StreamReset) and event.remote_reset:
            silent -= 1
    if data > 0 and flood.in_flight:
        size = max(size, data)
        free = data if size <= flood.in_flight else data * flood.in_flight // size
        flood.in_flight = max(flood.in_flight - size, 0)
        data -= free
    silent = max(silent, 0)  # (a miscount must not pay for the other frames of this read)
    if silent and flood.ignored:
        free = min(silent, flood.ignored)
        flood.ignored -= free
        silent -= free
    cost += silent + max(data, 0)
    if heads:
        flood.earn(heads)
    updates = frames.get(_WINDOW_UPDATE, 0)
    if updates:
        free = min(updates, flood.credit)
        flood.credit -= free
        cost += updates - free
    return cost


_ENDED: Final = (StreamState.HALF_CLOSED_REMOTE, StreamState.CLOSED)


def reset_stream(
    conn: connection.H2Connection, stream_id: int, code: int, flood: FloodGuard
) -> None:
    """``conn.reset_stream``, crediting ``flood`` with what the peer may have in flight on the
    stream (RFC 9113 section 5.4.2: frames after a reset are ignored): the DATA its window
    still allows, none once it ended its side. Raises ``h2``'s errors as it does (the stream
    closed already)."""
    stream = conn.streams.get(stream_id)
    ended = stream is None or stream.state_machine.state in _ENDED
    window = 0 if ended else conn.remote_flow_control_window(stream_id)
    conn.reset_stream(stream_id, code)
    flood.reset_sent(window)


def send_within_windows(
    conn: connection.H2Connection, stream_id: int, out: deque[bytes], flood: FloodGuard
) -> int:
    """Send DATA from the front of ``out`` while the stream's and the connection's windows
    allow, frame by frame (a chunk may be split); returns the bytes sent. What does not fit
    stays in ``out`` for the next WINDOW_UPDATE, which each frame earns in ``flood``."""
    sent = frames = 0
    while out:
        room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
        if room <= 0:
            break
        chunk = out[0]
        if len(chunk) > room:
            out[0] = chunk[room:]
            chunk = chunk[:room]
        else:
            out.popleft()
        conn.send_data(stream_id, chunk)
        sent += len(chunk)
        frames += 1
    if frames:
        flood.earn(frames)
    return sent


STREAM_HIGH_WATER: Final = 256 * 1024
"""Bytes one stream may hold waiting for the peer's windows before its source stops (it reads
again below half): a fast stream is never short of data while its peer reads."""
CONNECTION_HIGH_WATER: Final = 1024 * 1024
"""Bytes all of a connection's streams may hold waiting before every source but the wanted
stops (:class:`Budget`; they read again below half). Per stream alone, a client with 100
streams whose windows stay closed made the runtime hold 35 MiB (100 times
:data:`STREAM_HIGH_WATER` and a read each); HAProxy 2.6 held 3.5 MiB, Envoy 1.40 830 MiB
(bench/h2_dribble.py ``--outbound --dribble none``)."""
RESUME_ROOM: Final = 64 * 1024
"""What a stream that reads again is expected to bring (about a read): below the low-water
mark, streams resume in turn while their reads fit under :data:`CONNECTION_HIGH_WATER`, not
all of them at once (each brings a read before it can be stopped again)."""


class Holder(Protocol):
    """A stream of a :class:`Budget`: bytes it holds for the peer, and its source."""

    @property
    def pending(self) -> int:
        """Bytes it holds waiting for the peer's windows."""

    @property
    def wanted(self) -> bool:
        """Nothing waits and the peer's windows have room: what its source brings goes out at
        once (stopped, it would wait for bytes nobody else can free: a deadlock)."""

    def hold(self, on: bool) -> None:
        """Stop its source (``on``), or let it read again."""


class Budget:
    """The bytes one connection's streams hold waiting for its peer, with two limits: a
    stream's own (:data:`STREAM_HIGH_WATER`) and the connection's
    (:data:`CONNECTION_HIGH_WATER`). Past the connection's, every stream's source stops at
    once (``members``: the streams with a source), but a wanted one's (:attr:`Holder.wanted`);
    stopped streams read again in the order they stopped once the connection's bytes are
    below half (:data:`RESUME_ROOM`), or as soon as they are wanted, so a peer that reads
    any of its streams gets it whole whatever the others hold. Both sides of HTTP/2 keep
    one: responses to a client (``h2_server``) and request bodies to an endpoint
    (``h2_client``)."""

    __slots__ = ("_members", "_over", "_stopped", "held")

    def __init__(self, members: Callable[[], Iterable[Holder]]) -> None:
        self._members = members
        self._stopped: dict[Holder, None] = {}  # in the order they stopped
        self._over = False  # past the connection's mark, not yet back below half
        self.held = 0

    def changed(self, holder: Holder, n: int) -> None:
        """``holder``'s pending bytes changed by ``n`` (its source wrote, minus what went
        out; negative: only sent). Stops or resumes sources as the limits say."""
        self.held += n
        stopped = self._stopped
        if holder in stopped:
            if n <= 0 and holder.wanted:
                del stopped[holder]
                holder.hold(False)
        elif n > 0 and (  # (it holds bytes: not wanted)
            holder.pending > STREAM_HIGH_WATER or self.held > CONNECTION_HIGH_WATER
        ):
            stopped[holder] = None
            holder.hold(True)
        self._settle()

    def _settle(self) -> None:
        """Past the connection's mark (first time): every source stops but the wanted ones';
        below half: stopped streams read again (:meth:`_resume`)."""
        if self.held > CONNECTION_HIGH_WATER:
            if not self._over:
                self._over = True
                stopped = self._stopped
                for member in list(self._members()):
                    if member not in stopped and not member.wanted:
                        stopped[member] = None
                        member.hold(True)
        elif self.held <= CONNECTION_HIGH_WATER // 2:
            self._over = False
            if self._stopped:
                self._resume()

    def _resume(self) -> None:
        """Stopped streams below their own mark read again, first stopped first, as many as
        :data:`RESUME_ROOM` says fit under the connection's mark."""
        room = CONNECTION_HIGH_WATER - self.held
        for holder in list(self._stopped):
            if holder.pending <= STREAM_HIGH_WATER // 2:
                del self._stopped[holder]
                holder.hold(False)
                room -= RESUME_ROOM
                if room <= 0:
                    return

    def leave(self, holder: Holder) -> None:
        """``holder`` is done (ended, reset): its bytes are no longer held, its source no
        longer stopped by this budget."""
        self.held -= holder.pending
        self._stopped.pop(holder, None)
        self._settle()

    def release(self, holder: Holder) -> None:
        """``holder``'s source is gone (its response read whole): it stops no more; its bytes
        still count until they went out."""
        self._stopped.pop(holder, None)


def wanted(conn: connection.H2Connection, stream_id: int, waiting: bool, blocked: bool) -> bool:
    """:attr:`Holder.wanted` of stream ``stream_id``: nothing of it is ``waiting``, the peer
    reads (not ``blocked``: the connection is open and its transport takes writes) and the
    windows, its own and the connection's, let it send DATA now (False once it closed)."""
    if waiting or blocked:
        return False
    try:
        return conn.local_flow_control_window(stream_id) > 0
    except exceptions.H2Error:
        return False


_Stream = TypeVar("_Stream")


def pump_each(
    conn: connection.H2Connection, streams: Iterable[_Stream], pump: Callable[[_Stream], None]
) -> None:
    """``pump`` each of ``streams`` (its DATA within the windows) after the connection's window
    grew, until that window is used up: the streams after it could send nothing. A client
    opening the connection's window a byte at a time, 100 streams waiting, cost a pump of each
    an update: 400-470 us of CPU an update against 160-200 with one stream
    (bench/h2_dribble.py ``--outbound --dribble connection``)."""
    for stream in list(streams):
        if conn.outbound_flow_control_window <= 0:
            return
        pump(stream)


def pending_frame(h2: connection.H2Connection) -> int:
    """The announced length of the frame ``h2`` is still waiting for (0: none): ``h2``
    checks a frame's length only once all of it is in, up to 16 MiB later. Its buffer's name
    differs between versions: ``_data`` since h2 4.2, ``data`` before and in jh2."""
    buf = h2.incoming_buffer
    data: Any = getattr(buf, "_data", None)
    if data is None:
        data = getattr(buf, "data", b"")
    if len(data) < 9:
        return 0
    return int(Frame.parse_frame_header(memoryview(bytes(data[:9])))[1])


def finish_after_goaway(h2: connection.H2Connection) -> bool:
    """Let a client connection go on receiving after the server's GOAWAY, so the streams the
    server still processes (ids up to its last one) can finish, as RFC 9113 section 6.8 says
    they may; ``h2`` ends the connection's state at GOAWAY and refuses every later frame.
    Only ``H2Client`` calls it, and it opens no stream after a GOAWAY. False when this ``h2``
    has no such state table (those streams then fail as ``reset``)."""
    machine = getattr(h2, "state_machine", None)
    table = getattr(machine, "_transitions", None)
    if machine is None or not isinstance(table, dict):
        return False
    states = connection.ConnectionState
    inputs = connection.ConnectionInputs
    key = (states.CLIENT_OPEN, inputs.RECV_GOAWAY)
    if key not in table:
        return False
    own = dict(table)
    own[key] = (None, states.CLIENT_OPEN)
    machine._transitions = own
    return True
