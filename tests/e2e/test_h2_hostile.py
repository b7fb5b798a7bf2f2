"""Hostile HTTP/2 clients against an ``http`` listener, built with the ``h2`` library and its
framing layer (``hyperframe``): each attack ends with the connection limited or closed (GOAWAY
with the right code) and the runtime's memory bounded, and the runtime goes on serving.

Attacks: a rapid-reset flood (CVE-2023-44487) and resets the client makes the server send
(MadeYouReset, CVE-2025-8671), PING and SETTINGS floods, more streams than
announced, a header list over the limit, a CONTINUATION flood, a flow-control window
overflow, garbage after the preface, and slow readers (one stream of tens of MiB, many
streams that are never read, 100 streams whose windows stay closed, a slow reader of 100
streams) and a large upload to an endpoint that is slow to read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import select
import socket
import threading
import time
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path

import h2_peer
import hpack
import pytest
from engines import ENGINES, hostile_engine, resident, serving_pids
from h2.settings import SettingCodes
from h2_peer import PREFACE, Dribbler, Peer, window_update
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame, WindowUpdateFrame
from runtime_harness import SERVE_HANDLER, Runtime, memory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MIB = 1 << 20
PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, ENHANCE_YOUR_CALM = 0x1, 0x2, 0x3, 0xB
STREAM_CLOSED = 0x5

BACKEND = (
    r"""
import hashlib, http.server, json, sys, time
BLOCK = bytes(range(256)) * 4096
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[1])
        self.send_response(200)
        self.send_header("content-length", str(n))
        self.end_headers()
        while n:
            piece = BLOCK[: min(n, len(BLOCK))]
            self.wfile.write(piece)
            n -= len(piece)
    def do_POST(self):
        time.sleep(float(self.headers.get("x-stall", "0")))
        digest, got = hashlib.md5(), 0
        left = int(self.headers.get("content-length") or -1)
        while left:
            if left < 0:  # chunked
                size = int(self.rfile.readline(), 16)
                if not size:
                    self.rfile.readline()
                    break
                data = self.rfile.read(size)
                self.rfile.readline()
            else:
                data = self.rfile.read(min(left, 1 << 20))
                left -= len(data)
            digest.update(data)
            got += len(data)
        out = json.dumps({"bytes": got, "md5": digest.hexdigest()}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.request_queue_size = 256
"""
    + SERVE_HANDLER
)
BLOCK = bytes(range(256)) * 4096


def proxied(tmp_path: Path) -> ContextManager[Runtime]:
    return h2_peer.proxied(tmp_path, BACKEND, service="timeout: 60s")


def still_serves(rt: Runtime) -> None:
    peer = Peer(rt.port)
    assert peer.get("/bytes/10", "web").status == 200
    peer.close()


def upstream_tries(rt: Runtime) -> int:
    return sum(
        int(float(v))
        for v in re.findall(r"meshgen_upstream_requests_total\{[^}]*\} (\S+)", rt.admin("/metrics"))
    )


def test_rapid_reset_flood_is_cut_off(tmp_path: Path) -> None:
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        for _ in range(1000):  # sent before the server's SETTINGS are read: no limit known
            sid = peer.h2.get_next_available_stream_id()
            peer.h2.send_headers(sid, [(":method", "GET"), (":path", "/bytes/1000000"),
                                       (":scheme", "http"), (":authority", "web")])  # fmt: skip
            peer.h2.reset_stream(sid)
        peer.send_raw(peer.h2.data_to_send())
        assert peer.wait_closed()
        assert peer.goaway == ENHANCE_YOUR_CALM
        assert upstream_tries(rt) < 200  # reset streams do not go on to the endpoint
        assert 'reason="bad_request"} 1' in rt.admin("/metrics")
        still_serves(rt)


@pytest.mark.parametrize("frame", [b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong",
                                   b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
                                   b"\x00\x00\x05\x02\x00\x00\x00\x00\x03\x00\x00\x00\x00\x10",
                                   b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x01"],
                         ids=["ping", "settings", "priority", "window-update"])  # fmt: skip
def test_a_ping_settings_or_priority_flood_is_cut_off(tmp_path: Path, frame: bytes) -> None:
    """PING and SETTINGS each ask for an answer, which ``h2`` makes at ~30 us a frame, and a
    PRIORITY frame costs as much to parse: 20,000 of them in a few writes end the connection
    (GOAWAY ENHANCE_YOUR_CALM) after the budget of 1,000, instead of holding the event loop
    while every one is worked through. So do window updates nothing was sent for (the
    connection's, by 1; they were all taken before, as HAProxy 2.6 takes them; Envoy closes
    the connection within a second)."""
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        peer.send_raw(frame * 20000)
        assert peer.wait_closed()
        assert peer.goaway == ENHANCE_YOUR_CALM
        assert 'reason="bad_request"} 1' in rt.admin("/metrics")
        still_serves(rt)


def test_a_window_update_flood_on_a_closed_stream_is_cut_off(tmp_path: Path) -> None:
    """Window updates for a stream already answered: ``h2`` reports none of them, yet works
    through each (200,000 held the event loop for over 10 s, every listener with it): counted
    from the frame headers, 20,000 end the connection like any flood."""
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        assert peer.get("/bytes/10", "web").status == 200  # stream 1, closed now
        peer.send_raw(b"\x00\x00\x04\x08\x00\x00\x00\x00\x01\x00\x00\x00\x01" * 20000)
        assert peer.wait_closed()
        assert peer.goaway == ENHANCE_YOUR_CALM
        still_serves(rt)


def timed_get(port: int) -> float:
    """Seconds a GET on a new connection to ``port`` takes to be answered 200 (while another
    connection attacks: how long the engine's event loop was held)."""
    start = time.monotonic()
    other = Peer(port, timeout=30.0)
    assert other.get("/ok/b", "hostile").status == 200
    took = time.monotonic() - start
    other.close()
    return took


def flood(peer: Peer, frame: bytes, count: int) -> None:
    """Send ``frame`` ``count`` times, 64 KiB at a time, reading what the proxy answers in
    between (a proxy answering each frame must not stall on a peer that does not read); stops
    once the proxy closed."""
    chunk = frame * (65536 // len(frame))
    per_chunk = len(chunk) // len(frame)
    for _ in range(0, count, per_chunk):
        if not peer.send_raw(chunk):
            return
        while select.select([peer.sock], [], [], 0)[0]:
            if not peer.receive():
                return


CLOSED_STREAM_FLOODS = {
    "rst-stream": b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x08",
    "data": b"\x00\x00\x01\x00\x00\x00\x00\x00\x01x",
}
FLOOD_ENDS = {  # engine, frame: the GOAWAY code that closes the connection (None: kept open)
    ("runtime", "rst-stream"): ENHANCE_YOUR_CALM,
    ("runtime", "data"): ENHANCE_YOUR_CALM,
    ("haproxy", "rst-stream"): None,
    ("haproxy", "data"): None,
    ("envoy", "rst-stream"): INTERNAL_ERROR,
    ("envoy", "data"): None,
}


@pytest.mark.parametrize("frame", CLOSED_STREAM_FLOODS)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_flood_on_a_closed_stream_is_cut_off_without_holding_the_loop(
    engine: str, frame: str, tmp_path: Path
) -> None:
    """200,000 RST_STREAM frames, or DATA frames of one byte, for a stream already answered:
    ``h2`` reports none of them, yet works through each (they held the runtime's event loop
    for over 10 s, a GET on another connection with it): counted from the frame headers, they
    end the connection like any flood (GOAWAY ENHANCE_YOUR_CALM after about 1,000), and the
    other connection is answered meanwhile. HAProxy 2.6 takes both floods and keeps the
    connection; Envoy 1.40 closes on the RST_STREAM flood (GOAWAY INTERNAL_ERROR) and takes
    the DATA flood; on both the other connection is answered meanwhile."""
    with hostile_engine(engine, tmp_path) as e:
        peer = Peer(e.port)
        assert peer.get("/ok/a", "hostile").status == 200  # stream 1, closed now
        sender = threading.Thread(target=flood, args=(peer, CLOSED_STREAM_FLOODS[frame], 200000))
        sender.start()
        time.sleep(0.2)
        took = timed_get(e.port)
        sender.join(timeout=60)
        assert not sender.is_alive()
        assert took < 2.0, f"a GET on another connection took {took:.1f} s"
        goaway = FLOOD_ENDS[engine, frame]
        if goaway is None:
            assert peer.get("/ok/c", "hostile").body == b"c"  # the same connection goes on
        else:
            assert peer.closed or peer.wait_closed()
            assert peer.goaway == goaway
        peer.close()


def one_byte_frames(peer: Peer, sid: int, count: int) -> None:
    """``count`` DATA frames of one byte on ``sid`` in one write (told to ``peer``'s ``h2``,
    which counts its windows), then END_STREAM."""
    peer.send_raw((b"\x00\x00\x01\x00\x00" + sid.to_bytes(4, "big") + b"x") * count)
    peer.h2.outbound_flow_control_window -= count
    peer.h2.streams[sid].outbound_flow_control_window -= count
    peer.send_raw(b"\x00\x00\x00\x00\x01" + sid.to_bytes(4, "big"))


@pytest.mark.parametrize("engine", ENGINES)
def test_one_byte_data_frames_do_not_hold_the_loop(engine: str, tmp_path: Path) -> None:
    """An upload of 65,535 DATA frames of one byte (its whole window) in one write: no budget
    charges them (they are data), yet ``h2`` takes ~40 us each, and the runtime handed it
    whole reads (uvloop reads a socket up to 32 times a pass): a GET on another connection
    waited 2.8 s (pure) or 1.8 s (compiled). Now ``h2`` gets at most
    ``h2lib.FRAMES_PER_PASS`` frames a pass and the GET is answered meanwhile; the upload
    arrives whole. HAProxy 2.6 and Envoy 1.40 (0.14 s) answer the GET meanwhile too."""
    with hostile_engine(engine, tmp_path) as e:
        peer = Peer(e.port, timeout=60.0)
        sid = peer.request("/count", "hostile", method="POST", end=False)
        peer.sock.settimeout(0.3)
        with contextlib.suppress(TimeoutError):  # the server's SETTINGS and window updates
            while peer.receive():
                pass
        peer.sock.settimeout(60.0)
        count = min(65535, peer.h2.local_flow_control_window(sid))
        sender = threading.Thread(target=one_byte_frames, args=(peer, sid, count))
        sender.start()
        time.sleep(0.05)
        took = timed_get(e.port)
        sender.join(timeout=60)
        answer = peer.wait(sid, timeout=60)[0]
        peer.close()
        assert answer.status == 200 and answer.body == b"%d" % count
        assert took < 0.5, f"a GET on another connection took {took:.2f} s"


def server_resets(peer: Peer, path: str, count: int) -> bytes:
    """``count`` requests for ``path``, each made a stream the server must reset: a DATA frame
    after the request's END_STREAM is a stream error (STREAM_CLOSED, RFC 9113 section 5.1)."""
    limit = SettingCodes.MAX_CONCURRENT_STREAMS
    peer.h2.remote_settings[limit] = count + 100  # (the server's streams end as they come)
    peer.h2.remote_settings.acknowledge()
    frames = []
    for _ in range(count):
        sid = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                   (":authority", "hostile")], end_stream=True)  # fmt: skip
        frames.append(
            peer.h2.data_to_send() + b"\x00\x00\x01\x00\x00" + sid.to_bytes(4, "big") + b"x"
        )
    return b"".join(frames)


SERVER_RESET_ENDS = {"runtime": ENHANCE_YOUR_CALM, "haproxy": None, "envoy": STREAM_CLOSED}


@pytest.mark.parametrize("engine", ENGINES)
def test_streams_the_server_resets_are_abandoned_and_counted(engine: str, tmp_path: Path) -> None:
    """MadeYouReset (CVE-2025-8671): a client makes the server reset its streams, here with
    a DATA frame after each request's END_STREAM; a budget of the client's own resets does
    not see them, and a server that goes on working on each request lets one connection
    keep any number of them at the endpoint. 1,000 such requests for ``/slow`` (answered
    after 1.5 s) in one write: the runtime abandons each reset stream's request, as for a
    client's reset, and counts it in the rapid-reset budget (``RESETS_PER_SECOND``), so the
    connection ends with GOAWAY ENHANCE_YOUR_CALM; HAProxy 2.6 resets each stream
    (STREAM_CLOSED) and keeps the connection; Envoy 1.40 ends the connection (GOAWAY
    STREAM_CLOSED). On each, half a second later, the endpoint has had at most one of them
    (a GET there finds at most one connection besides the first)."""
    with hostile_engine(engine, tmp_path) as e:
        peer = Peer(e.port)
        assert peer.get("/ok/a", "hostile").status == 200
        peer.send_raw(server_resets(peer, "/slow", 1000))
        time.sleep(0.5)
        other = Peer(e.port)
        connections = int(other.get("/whoami", "hostile").body)  # the endpoint's serial
        other.close()
        assert connections <= 2
        if SERVER_RESET_ENDS[engine] is None:
            peer.sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                while peer.receive():
                    pass
            resets = [a.reset for a in peer.answers.values() if a.reset is not None]
            assert resets == [STREAM_CLOSED] * 1000
            assert peer.get("/ok/c", "hostile").body == b"c"  # the same connection goes on
        else:
            assert peer.closed or peer.wait_closed()
            assert peer.goaway == SERVER_RESET_ENDS[engine]
        peer.close()


def test_more_streams_than_announced_close_the_connection(tmp_path: Path) -> None:
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        for _ in range(150):  # uploads that never end: each stream stays open
            sid = peer.h2.get_next_available_stream_id()
            peer.h2.send_headers(sid, [(":method", "POST"), (":path", "/up"),
                                       (":scheme", "http"), (":authority", "web")])  # fmt: skip
        peer.send_raw(peer.h2.data_to_send())
        assert peer.wait_closed()
        assert peer.goaway == PROTOCOL_ERROR
        still_serves(rt)


def test_header_list_over_the_limit_closes(tmp_path: Path) -> None:
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        peer.request("/", "web", headers=[("x-big", "a" * 70000)])
        assert peer.wait_closed()
        assert peer.goaway == ENHANCE_YOUR_CALM
        assert 'reason="request_head_bytes"} 1' in rt.admin("/metrics")
        still_serves(rt)


def test_continuation_flood_closes(tmp_path: Path) -> None:
    with proxied(tmp_path) as rt:
        before = memory(rt.proc.pid, "VmRSS")
        peer = Peer(rt.port)
        block = hpack.Encoder().encode([(b":method", b"GET"), (b":path", b"/")])
        head = HeadersFrame(1, data=block)  # no END_HEADERS: CONTINUATION frames follow
        flood = b"".join(ContinuationFrame(1, data=b"x-a: " * 3000).serialize() for _ in range(200))
        peer.send_raw(head.serialize())
        for _ in range(20):
            if not peer.send_raw(flood):
                break
        assert peer.wait_closed()
        assert peer.goaway == PROTOCOL_ERROR
        assert memory(rt.proc.pid, "VmRSS") - before < 16 * MIB
        still_serves(rt)


def test_window_overflow_closes(tmp_path: Path) -> None:
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        peer.send_raw(WindowUpdateFrame(0, window_increment=2**31 - 1).serialize())
        assert peer.wait_closed()
        assert peer.goaway == FLOW_CONTROL_ERROR
        still_serves(rt)


@pytest.mark.parametrize(
    "garbage",
    [
        PREFACE + b"GET / HTTP/1.1\r\nHost: web\r\n\r\n",  # not a frame after the preface
        PREFACE  # a header block HPACK cannot decode
        + HeadersFrame(1, data=b"\xff\xff\xff\xff", flags=["END_HEADERS"]).serialize(),
        PREFACE  # a WINDOW_UPDATE of 3 bytes
        + SettingsFrame(0).serialize()
        + b"\x00\x00\x03\x08\x00\x00\x00\x00\x00\x00\x00\x01",
    ],
    ids=["http1-after-preface", "bad-hpack", "short-window-update"],
)
def test_garbage_after_the_preface_closes(tmp_path: Path, garbage: bytes) -> None:
    with proxied(tmp_path) as rt:
        out, closed = rt.converse(garbage, quiet=5.0)
        assert closed
        assert b"HTTP/1.1" not in out  # never answered as HTTP/1.1
        still_serves(rt)


def test_slow_reader_of_a_large_response_keeps_memory_bounded(tmp_path: Path) -> None:
    """48 MiB through one stream to a client that reads nothing for 2 s, then everything:
    the proxy holds at most a window and its high-water mark, not the response."""
    size = 48 * MIB
    with proxied(tmp_path) as rt:
        pid = rt.proc.pid
        still_serves(rt)
        before = memory(pid, "VmRSS")
        peer = Peer(rt.port, auto_ack=False, timeout=30)
        sid = peer.request(f"/bytes/{size}", "web")
        deadline = time.monotonic() + 2.0
        peer.sock.settimeout(0.2)
        while time.monotonic() < deadline:  # read (the socket) but give no window back
            with contextlib.suppress(TimeoutError):
                peer.receive()
        stalled = len(peer.answers[sid].body)
        assert stalled <= 65535  # the initial stream window, nothing more
        assert memory(pid, "VmRSS") - before < 8 * MIB
        peer.sock.settimeout(30)
        peer.auto_ack = True
        peer.h2.acknowledge_received_data(stalled, sid)
        peer.flush()
        digest = hashlib.md5()
        (answer,) = peer.wait(sid, timeout=60)
        expected = hashlib.md5()
        for offset in range(0, size, len(BLOCK)):
            expected.update(BLOCK[: min(len(BLOCK), size - offset)])
        digest.update(answer.body)
        assert len(answer.body) == size and digest.hexdigest() == expected.hexdigest()
        assert memory(pid, "VmHWM") - before < 16 * MIB, "the response was buffered"


def test_many_unread_streams_keep_memory_bounded(tmp_path: Path) -> None:
    """20 streams of 8 MiB each that the client never reads: each stays within its window
    and the high-water mark; closing the connection frees everything."""
    with proxied(tmp_path) as rt:
        pid = rt.proc.pid
        still_serves(rt)
        before = memory(pid, "VmRSS")
        peer = Peer(rt.port, auto_ack=False)
        for _ in range(20):
            peer.request(f"/bytes/{8 * MIB}", "web")
        time.sleep(3)  # the client's socket buffer fills, then the server's, then nothing
        assert memory(pid, "VmHWM") - before < 24 * MIB
        peer.close()
        still_serves(rt)


HELD = 16 * MIB
"""The most an engine's memory may grow for a connection's 100 streams nobody reads."""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_connections_unread_streams_hold_a_few_mib(engine: str, tmp_path: Path) -> None:
    """A client announces stream windows of 0 (SETTINGS_INITIAL_WINDOW_SIZE), GETs 1 MiB on
    100 streams and opens no window. A stream's own high-water mark let the runtime hold 38
    MiB (100 marks and a read each); the connection's budget (``h2lib.Budget``) stops every
    stream's upstream at 1 MiB for all, and the read that brought each head (64 KiB from this
    backend) stays: 8-11 MiB grown, HAProxy 2.6 3.5 MiB. Envoy 1.40 with its default buffers
    and windows held the responses whole (100 MiB here, 830 MiB for 100 streams of 8 MiB:
    bench/h2_dribble.py ``--outbound --dribble none``); the DIST gives it the runtime's
    (``envoy_clusters.BUFFER_LIMIT``, ``envoy_listeners.DOWNSTREAM_HTTP2``): ~10 MiB."""
    with hostile_engine(engine, tmp_path) as e:
        pids = serving_pids(e.port)
        warm = Peer(e.port)
        assert warm.get("/ok/warm", "hostile").status == 200
        before = resident(pids)
        client = Dribbler(e.port, window=0)
        time.sleep(0.2)  # the engine applies the window before the streams open
        for _ in range(100):
            client.get(f"/bytes/{MIB}", "hostile")
        grown, deadline = 0, time.monotonic() + 3.0
        while time.monotonic() < deadline:
            grown = max(grown, resident(pids) - before)
            time.sleep(0.05)
        assert client.bytes == 0 and not client.closed
        client.close()
        assert warm.get("/ok/after", "hostile").status == 200
        warm.close()
        assert grown < HELD, f"{grown / MIB:.1f} MiB held for 100 unread streams"


def test_a_slow_client_gets_each_of_100_streams_whole(tmp_path: Path) -> None:
    """100 streams of 384 KiB (37.5 MiB, the connection's budget many times over) to a
    client with small segments that reads 16 KiB at a time, a millisecond apart, and gives
    each read's window back: every body arrives whole (streams stopped by the connection's
    budget read again, none starves), and the runtime holds a few MiB meanwhile."""
    size = 384 * 1024
    with proxied(tmp_path) as rt:
        pid = rt.proc.pid
        still_serves(rt)
        before = memory(pid, "VmRSS")
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.connect(("127.0.0.1", rt.port))
        peer = Peer(rt.port, sock=sock, timeout=60)
        sids = [peer.request(f"/bytes/{size}", "web") for _ in range(100)]
        deadline = time.monotonic() + 100
        while not all(peer.answers[s].ended for s in sids):
            assert time.monotonic() < deadline, "streams starved"
            assert peer.receive(16384), f"closed (GOAWAY {peer.goaway})"
            time.sleep(0.001)
        peer.close()
        assert [(a.status, a.reset) for a in peer.wait(*sids)] == [(200, None)] * 100
        assert all(peer.answers[s].body == BLOCK[:size] for s in sids)
        assert memory(pid, "VmHWM") - before < 16 * MIB


def test_large_upload_to_a_slow_endpoint_is_windowed(tmp_path: Path) -> None:
    """32 MiB to an endpoint that waits 1.5 s before reading: the client is held by flow
    control (the proxy acknowledges what went upstream only)."""
    size = 32 * MIB
    body = (BLOCK * (size // len(BLOCK) + 1))[:size]
    with proxied(tmp_path) as rt:
        pid = rt.proc.pid
        still_serves(rt)
        before = memory(pid, "VmRSS")
        peer = Peer(rt.port, timeout=60)
        (answer,) = peer.wait(
            peer.request("/up", "web", "POST", [("x-stall", "1.5")], body), timeout=60
        )
        assert answer.status == 200
        assert json.loads(answer.body) == {"bytes": size, "md5": hashlib.md5(body).hexdigest()}
        assert memory(pid, "VmHWM") - before < 16 * MIB, "the upload was buffered"


def dribble_round(client: Dribbler, update: bytes, rounds: int) -> None:
    """``rounds`` times: ``update`` (a byte more of window), then wait for that byte; each
    brought one DATA frame of one byte, no more."""
    frames, got = client.frames, client.bytes
    for n in range(1, rounds + 1):
        assert client.send(update) and client.wait_bytes(got + n), f"round {n}: no byte came"
    time.sleep(0.2)  # (anything past the window would be in by now)
    assert (client.frames - frames, client.bytes - got) == (rounds, rounds)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_connection_window_opened_a_byte_at_a_time_gets_a_frame_a_byte_with_many_streams(
    engine: str, tmp_path: Path
) -> None:
    """A client lets the connection's window run out, then opens it one byte at a time,
    waiting for each byte (wide stream windows): one stream waiting, then 100. Every engine
    sends each byte as a DATA frame of its own, however many streams wait, and nothing past
    the window. What an update costs with many streams waiting is measured by
    bench/h2_dribble.py (``--outbound --dribble connection``, BENCHMARKS.md): the runtime
    pumped every stream after each update, 460 us of CPU instead of 180 with 100 streams;
    ``h2lib.pump_each`` stops at the window's end
    (``tests/unit/test_h2_flood.py::test_pumping_stops_at_the_connection_windows_end_and_sends_the_same``
    counts the pumps)."""
    with hostile_engine(engine, tmp_path) as e:
        client = Dribbler(e.port, window=1 << 24)
        client.get("/bytes/262144", "hostile")
        assert client.wait_bytes(65535)  # the connection's window, used up
        dribble_round(client, window_update(0), 500)
        for _ in range(99):
            client.get("/bytes/262144", "hostile")
        time.sleep(1.0)  # their heads sent and their DATA waiting
        assert client.bytes == 65535 + 500  # none of them past the window
        dribble_round(client, window_update(0), 500)
        client.close()


DRIBBLE_ENDS = {"runtime": ENHANCE_YOUR_CALM, "haproxy": None, "envoy": -1}
"""engine: the GOAWAY code that ends a client sending 256 updates of a byte a write (None: it is
served; -1: closed without a GOAWAY)."""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_window_opened_a_byte_at_a_time_gets_no_one_byte_frames(
    engine: str, tmp_path: Path
) -> None:
    """A client with a stream window of one byte (SETTINGS_INITIAL_WINDOW_SIZE 1) GETs 4 MiB,
    then opens the stream's and the connection's windows a byte at a time, 256 updates of each
    in a write (the data dribble, CVE-2019-9511): none of the engines answers with a DATA frame
    of one byte an update. ``h2`` applies a pass's updates before the runtime sees them, so it
    sends one frame a stream and pass (~128 bytes), and the updates beyond two a frame are
    charged (``h2lib.UPDATES_PER_FRAME``): GOAWAY ENHANCE_YOUR_CALM after about 1,000.
    HAProxy 2.6 sends a frame a read (~250 bytes) and keeps the connection; Envoy 1.40 closes
    it without a GOAWAY (its limit of window updates a DATA frame sent). A GET on another
    connection is answered meanwhile."""
    with hostile_engine(engine, tmp_path) as e:
        client = Dribbler(e.port, window=1)
        time.sleep(0.2)  # the engine applies the window before the stream opens
        sid = client.get(f"/bytes/{4 * MIB}", "hostile")
        time.sleep(0.3)
        updates = (window_update(sid) + window_update(0)) * 256
        writes = 0
        while writes < 80 and client.send(updates):
            writes += 1
            client.wait_bytes(1 + 256 * writes, timeout=0.2)
        took = timed_get(e.port)
        ended = DRIBBLE_ENDS[engine]
        if ended is None:
            assert client.wait_bytes(1 + 256 * writes) and not client.closed
        else:
            deadline = time.monotonic() + 10
            while not client.closed and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.closed and client.goaway == (None if ended < 0 else ended)
        client.close()
        more = client.bytes - 1  # after the first window's byte
        assert client.frames - 1 <= more / 64, f"{client.frames} DATA frames, {client.bytes} bytes"
        assert took < 0.5, f"a GET on another connection took {took:.2f} s"
