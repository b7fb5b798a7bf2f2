"""The control-frame budget of an HTTP/2 connection (``h2lib.FloodGuard`` and ``receive``),
and DATA sent within the peer's windows (``send_within_windows``, ``pump_each``)."""

from __future__ import annotations

import itertools
from collections import Counter, deque

import pytest
from h2.connection import H2Connection
from h2.events import Event
from h2.settings import SettingCodes
from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.codec import h2lib
from meshgen.runtime.codec.http1 import PREFACE

PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong"
PRIORITY_1 = b"\x00\x00\x05\x02\x00\x00\x00\x00\x01\x00\x00\x00\x00\x10"  # stream 1
EMPTY_DATA_1 = b"\x00\x00\x00\x00\x00\x00\x00\x00\x01"  # no data, no END_STREAM
RST_1 = b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x08"  # CANCEL


def receive_all(conn: H2Connection, data: bytes, guard: h2lib.FloodGuard) -> list[Event]:
    """``h2lib.receive`` pass after pass until ``data`` is worked through, as a connection's
    ``h2lib.Reading`` does (``FRAMES_PER_PASS`` frames a pass)."""
    received: list[Event] = []
    while data:
        events, data = h2lib.receive(conn, data, guard)
        received += events
    return received


def server() -> H2Connection:
    conn = h2lib.new_connection(False, {SettingCodes.MAX_CONCURRENT_STREAMS: 100}, 65536, 1 << 20)
    conn.data_to_send()
    receive_all(conn, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
                  h2lib.FloodGuard())  # fmt: skip
    conn.data_to_send()
    return conn


def test_the_budget_is_a_burst_then_a_rate() -> None:
    guard = h2lib.FloodGuard()
    assert guard.spend(h2lib.CONTROL_BURST)
    assert not guard.spend(1)
    guard.stamp -= 1.0  # a second later: CONTROL_RATE frames more (less the one overdrawn)
    assert guard.spend(int(h2lib.CONTROL_RATE) - 1)
    assert not guard.spend(1)


def test_pings_within_the_budget_are_answered() -> None:
    conn = server()
    events = receive_all(conn, PING * 500, h2lib.FloodGuard())
    assert len(events) == 500
    assert conn.data_to_send().count(b"pingpong") == 500


def test_a_flood_in_one_read_is_refused_with_enhance_your_calm() -> None:
    """20,000 PINGs in one read: refused after the budget and one pass, not all answered."""
    conn = server()
    with pytest.raises(h2lib.ControlFlood):
        receive_all(conn, PING * 20000, h2lib.FloodGuard())
    out = conn.data_to_send()
    goaway = out[out.rindex(b"\x00\x00\x08\x07") :]  # GOAWAY: last stream id, error code
    assert int.from_bytes(goaway[13:17], "big") == 0xB  # ENHANCE_YOUR_CALM
    assert out.count(b"pingpong") < 3000


def open_stream(conn: H2Connection, end: bool, priority: bool = False) -> bytes:
    """The frames of a client's request head on stream 1 (a new HPACK context: ``conn`` is
    fresh)."""
    client = H2Connection()
    client.initiate_connection()
    client.data_to_send()
    head = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "a")]
    client.send_headers(1, head, end_stream=end, priority_weight=16 if priority else None)
    return client.data_to_send()


@pytest.mark.parametrize("frame", [PRIORITY_1, EMPTY_DATA_1], ids=["priority", "empty-data"])
def test_frames_with_nothing_in_them_count_against_the_budget(frame: bytes) -> None:
    conn = server()
    guard = h2lib.FloodGuard()
    receive_all(conn, open_stream(conn, end=False), guard)
    with pytest.raises(h2lib.ControlFlood):
        receive_all(conn, frame * 2000, guard)


def test_requests_with_a_priority_and_bodies_that_end_empty_cost_nothing() -> None:
    """A HEADERS frame's own priority and an empty DATA frame that ends its stream are how
    clients send requests: thousands of them take nothing from the budget."""
    guard = h2lib.FloodGuard()
    for _ in range(1200):
        conn = server()
        receive_all(conn, open_stream(conn, end=False, priority=True), guard)
        receive_all(conn, b"\x00\x00\x00\x00\x01\x00\x00\x00\x01", guard)  # END_STREAM
    assert guard.tokens == h2lib.CONTROL_BURST


def test_bodies_and_resets_of_open_streams_cost_nothing() -> None:
    """A DATA frame with data and a peer's reset of an open stream (the resets have a budget
    of their own) take nothing from the budget, though each is counted from its header."""
    guard = h2lib.FloodGuard()
    for _ in range(1200):
        conn = server()
        receive_all(conn, open_stream(conn, end=False), guard)
        receive_all(conn, b"\x00\x00\x01\x00\x00\x00\x00\x00\x01x" + RST_1, guard)
    assert guard.tokens == h2lib.CONTROL_BURST


HEADERS_1 = b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\x00\x81\xf3\x80"  # "x: ", END_STREAM


@pytest.mark.parametrize(
    "frame",
    [RST_1, b"\x00\x00\x01\x00\x00\x00\x00\x00\x01x", HEADERS_1,
     b"\x00\x00\x02\x0a\x00\x00\x00\x00\x00\x00\x00", b"\x00\x00\x01\x20\x00\x00\x00\x00\x00x"],
    ids=["rst-stream", "data", "headers", "altsvc", "unknown"],
)  # fmt: skip
def test_frames_h2_takes_silently_count_against_the_budget(frame: bytes) -> None:
    """On a stream already reset, ``h2`` reports nothing for a DATA, HEADERS or RST_STREAM
    frame (nor for an ALTSVC frame to a server, ever), yet works through each: counted from
    their headers, 2,000 of them are a flood; so are unknown frames."""
    conn = server()
    guard = h2lib.FloodGuard()
    receive_all(conn, open_stream(conn, end=True), guard)
    h2lib.reset_stream(conn, 1, 8, guard)  # the client ended its side: a few frames' credit
    with pytest.raises(h2lib.ControlFlood):
        receive_all(conn, frame * 2000, guard)


def _split_stream(frames: list[tuple[int, int, int]], cuts: list[int]) -> tuple[bytes, list[int]]:
    """A client's bytes (the preface, then ``frames`` as (type, flags, length) on stream 1) and
    the bounds of the reads ``cuts`` split them into."""
    stream = PREFACE + b"".join(
        len_.to_bytes(3, "big") + bytes([kind, flags, 0, 0, 0, 1]) + b"x" * len_
        for kind, flags, len_ in frames
    )
    return stream, sorted({0, len(stream), *(c for c in cuts if c < len(stream))})


def _counts(frames: list[tuple[int, int, int]]) -> Counter[int]:
    """How :meth:`h2lib.FloodGuard.frames` counts ``frames``: a header block once, as HEADERS
    (type 1), by the HEADERS or CONTINUATION (type 9) frame with END_HEADERS (flag 4)."""
    expected = Counter(kind for kind, _, _ in frames if kind not in (1, 9))
    expected[1] = sum(kind in (1, 9) and flags == 4 for kind, flags, _ in frames)
    return expected


@given(
    frames=st.lists(
        st.tuples(st.integers(0, 10), st.sampled_from([0, 4]), st.integers(0, 40)), max_size=40
    ),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_frames_are_counted_from_their_headers(
    frames: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    """However the bytes are split into reads, each frame is counted once, by its type; a
    header block once, as HEADERS, by the HEADERS or CONTINUATION frame that ends it (the
    server's guard skips the client's preface first); the DATA frames' bytes are added up."""
    stream, bounds = _split_stream(frames, cuts)
    guard = h2lib.FloodGuard(len(PREFACE))
    counted: Counter[int] = Counter()
    for a, b in itertools.pairwise(bounds):
        got, taken = guard.frames(stream[a:b], len(stream))
        assert taken == b - a
        counted.update(got)
    assert +counted == +_counts(frames)
    assert guard.data == sum(len_ for kind, _, len_ in frames if kind == 0)


@given(
    frames=st.lists(
        st.tuples(st.integers(0, 10), st.sampled_from([0, 4]), st.integers(0, 40)), max_size=60
    ),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    limit=st.integers(1, 6),
)
def test_a_pass_takes_at_most_its_frames_and_loses_none(
    frames: list[tuple[int, int, int]], cuts: list[int], limit: int
) -> None:
    """Reads taken ``limit`` frames a pass (as ``receive`` takes :data:`FRAMES_PER_PASS`):
    each pass takes some bytes and ends at most ``limit`` frames, the last one whole, and the
    frames counted are those of the whole stream, however it was split into reads."""
    stream, bounds = _split_stream(frames, cuts)
    ends = list(itertools.accumulate([len(PREFACE)] + [9 + len_ for _, _, len_ in frames]))
    guard = h2lib.FloodGuard(len(PREFACE))
    counted: Counter[int] = Counter()
    for a, b in itertools.pairwise(bounds):
        start = a
        while start < b:
            got, taken = guard.frames(stream[start:b], limit)
            assert taken > 0
            ended = sum(start < end <= start + taken for end in ends)
            assert ended <= limit
            assert start + taken == b or start + taken in ends
            counted.update(got)
            start += taken
    assert +counted == +_counts(frames)


def test_a_pass_of_one_byte_frames_stops_at_its_frames() -> None:
    """A read of 1,000 DATA frames of one byte: ``receive`` works through the first
    :data:`FRAMES_PER_PASS` and hands the rest back; a read of 16 KiB frames is taken whole."""
    conn = server()
    guard = h2lib.FloodGuard()
    receive_all(conn, open_stream(conn, end=False), guard)
    tiny = b"\x00\x00\x01\x00\x00\x00\x00\x00\x01x"
    events, later = h2lib.receive(conn, tiny * 1000, guard)
    assert (len(events), len(later)) == (
        h2lib.FRAMES_PER_PASS,
        10 * (1000 - h2lib.FRAMES_PER_PASS),
    )
    large = (b"\x00\x40\x00\x00\x00\x00\x00\x00\x01" + b"x" * 16384) * 16
    assert h2lib.FloodGuard().frames(large, h2lib.FRAMES_PER_PASS) == ({0: 16}, len(large))


def test_an_endpoint_flooding_a_closed_stream_is_cut_off_too() -> None:
    """The client side (``H2Client``, the gRPC probe) has the same budget: an endpoint's
    RST_STREAM frames on a stream the proxy reset are a flood past the budget."""
    conn = h2lib.new_connection(True, {}, 65536, 1 << 20)
    guard = h2lib.FloodGuard()
    receive_all(conn, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", guard)  # the server's SETTINGS
    conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                          (":authority", "a")], end_stream=True)  # fmt: skip
    h2lib.reset_stream(conn, 1, 8, guard)
    with pytest.raises(h2lib.ControlFlood):
        receive_all(conn, RST_1 * 2000, guard)


def endpoint() -> tuple[H2Connection, h2lib.FloodGuard]:
    """The proxy's side of a connection to an endpoint, its SETTINGS received."""
    conn = h2lib.new_connection(True, {}, 65536, 1 << 20)
    guard = h2lib.FloodGuard()
    receive_all(conn, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", guard)
    return conn, guard


def data_frame(sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + b"\x00\x00" + sid.to_bytes(4, "big") + payload


def test_frames_in_flight_on_streams_the_proxy_reset_cost_nothing() -> None:
    """RFC 9113 section 5.4.2: an endpoint may have DATA and trailers of a stream in flight
    when the proxy resets it (a timeout, a cancelled try), and they are ignored. 3 DATA
    frames and trailers of each of 400 cancelled streams (1,600 frames, past
    ``CONTROL_BURST``) are no flood; the credit is bounded (``IN_FLIGHT_CAP`` bytes), so DATA
    past it is a flood again."""
    conn, guard = endpoint()
    head = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "a")]
    for _ in range(400):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, head)
        h2lib.reset_stream(conn, sid, 8, guard)  # CANCEL
        data = data_frame(sid, b"\x00" * 5)
        trailers = b"\x00\x00\x04\x01\x05" + sid.to_bytes(4, "big") + b"\x00\x81\xf3\x80"
        assert receive_all(conn, data * 3 + trailers, guard) == []
    assert guard.tokens == h2lib.CONTROL_BURST - 1  # the SETTINGS
    with pytest.raises(h2lib.ControlFlood):
        receive_all(conn, data_frame(sid, b"x" * 1024) * 2200, guard)


def test_a_cancelled_stream_of_small_messages_may_have_its_window_in_flight() -> None:
    """A gRPC endpoint streaming small messages sends a DATA frame a message: a stream the
    proxy cancels may have its whole window of them in flight (hundreds measured, see
    ``test_parity_grpc::test_streams_cancelled_mid_stream_leave_the_others_alone``). 4,000
    frames of 15 bytes (60,000 of the stream's 65,535) cost nothing; once the window is
    used, frames cost again, and a stream the endpoint had ended earns no DATA."""
    conn, guard = endpoint()
    head = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")]
    conn.send_headers(1, head, end_stream=True)
    receive_all(conn, b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88", guard)  # 200
    h2lib.reset_stream(conn, 1, 8, guard)
    message = data_frame(1, b"\x00\x00\x00\x00\x0a" + b"m" * 10)
    assert receive_all(conn, message * 4000, guard) == []
    assert guard.tokens == h2lib.CONTROL_BURST - 1  # the SETTINGS
    with pytest.raises(h2lib.ControlFlood):
        receive_all(conn, message * 2000, guard)

    conn, guard = endpoint()
    conn.send_headers(1, head)  # an upload, still going when the endpoint answers
    ended = b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x88"  # 200, END_STREAM
    receive_all(conn, ended, guard)
    h2lib.reset_stream(conn, 1, 8, guard)
    with pytest.raises(h2lib.ControlFlood):
        receive_all(conn, message * 2000, guard)


def uploads_pumped(waiting: list[int], opened: int, each: bool) -> tuple[list[int], list[int]]:
    """Uploads of ``waiting`` bytes each to an endpoint that opened the connection's window by
    ``opened`` bytes, pumped by :func:`h2lib.pump_each` (``each``: none with the window used
    up) or one by one: the streams pumped and the bytes each has left."""
    conn, guard = endpoint()
    head = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "a")]
    outs: dict[int, deque[bytes]] = {}
    for size in waiting:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, head)
        outs[sid] = deque([b"x" * size] if size else [])
    if opened:
        receive_all(conn, b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + opened.to_bytes(4, "big"),
                    guard)  # fmt: skip
    pumped: list[int] = []

    def pump(sid: int) -> None:
        assert not each or conn.outbound_flow_control_window > 0, "pumped with no window"
        pumped.append(sid)
        h2lib.send_within_windows(conn, sid, outs[sid], guard)

    if each:
        h2lib.pump_each(conn, outs, pump)
    else:
        for sid in outs:
            pump(sid)
    return pumped, [sum(map(len, out)) for out in outs.values()]


@given(waiting=st.lists(st.integers(0, 40000), min_size=1, max_size=8),
       opened=st.integers(0, 150000))  # fmt: skip
def test_pumping_stops_at_the_connection_windows_end_and_sends_the_same(
    waiting: list[int], opened: int
) -> None:
    """:func:`h2lib.pump_each` sends what pumping every stream sends, in the same order, and
    pumps no stream once the connection's window is used up (a client opening it a byte at a
    time with 100 streams waiting cost a pump of each an update)."""
    pumped, left = uploads_pumped(waiting, opened, each=True)
    every, left_by_every = uploads_pumped(waiting, opened, each=False)
    assert pumped == every[: len(pumped)]
    assert left == left_by_every
    window = 65535 + opened  # (each stream's, 65,535, is never the smaller)
    used_up = [k for k in range(len(waiting)) if sum(waiting[: k + 1]) >= window]
    assert len(pumped) == (used_up[0] + 1 if used_up else len(waiting))
