"""The upstream connection pool against a real loopback endpoint: a pooled connection carries
no flow control of the exchange that ended.

An HTTP/1.1 connection stops reading while the client it streams to cannot take more, and
its client stops reading while the endpoint cannot take more of the request body. When the
response ends in the read that filled the client's side, the connection went back to the pool
paused; reused like that, it never read its next response, and the request waited for its
timeout (seen once in CI: the second request on a connection after a 512 MiB chunked download,
tests/e2e/test_streaming_memory.py). Likewise a client left paused for an endpoint that has
answered would never have its next request read; and an endpoint that has not taken all of
the last request is not given another. A connection (or HTTP/2 stream) that ends otherwise,
discarded or lost mid-upload, frees its client as well.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from h2_passes import data_frames_per_pass

from meshgen.runtime.codec import h2lib
from meshgen.runtime.codec.upstream_conn import UpstreamConnection
from meshgen.runtime.tables import Endpoint, Limits
from meshgen.runtime.upstream.pool import Pool

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
REQUEST = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"


async def _answer_every_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An endpoint that answers each request head with ANSWER."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _exchange(conn: UpstreamConnection) -> int:
    """One request on ``conn``: the response status, or a timeout."""
    conn.begin(REQUEST, False, None)
    conn.complete()
    assert conn.headers_future is not None
    await asyncio.wait_for(conn.headers_future, 2.0)
    return conn.status


class Client:
    """The client side of an exchange as the upstream connection sees it (``Downstream``)."""

    limits = Limits()

    def __init__(self) -> None:
        self.paused = False

    def set_upstream_paused(self, paused: bool) -> None:
        self.paused = paused


def test_a_connection_paused_by_flow_control_reads_again_once_pooled() -> None:
    """Released while paused, a connection answers its next request when taken again."""

    async def main() -> None:
        server = await asyncio.start_server(_answer_every_request, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool()
        try:
            conn = await pool.open("a/127.0.0.1", Endpoint("127.0.0.1", port), 2.0)
            assert await _exchange(conn) == 200
            conn.set_reading(False)  # the client's side was full as the response ended
            assert conn.transport is not None and not conn.transport.is_reading()
            pool.release(conn)
            assert conn.transport.is_reading()
            again = pool.take("a/127.0.0.1")
            assert again is conn
            assert await _exchange(again) == 200
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_a_connection_the_endpoint_has_not_drained_is_closed_and_frees_its_client() -> None:
    """The endpoint answered before taking the whole body (its side was full): the client is
    no longer held for it, and the connection is closed, not pooled (a next request's body
    would queue behind with no pause to hold it back)."""

    async def main() -> None:
        server = await asyncio.start_server(_answer_every_request, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool, client = Pool(), Client()
        try:
            conn = await pool.open("a/127.0.0.1", Endpoint("127.0.0.1", port), 2.0)
            conn.begin(REQUEST, False, client)
            conn.complete()
            conn.pause_writing()  # what the transport calls when the endpoint's side is full
            assert client.paused
            pool.release(conn)
            assert not client.paused and conn.downstream is None
            assert pool.take("a/127.0.0.1") is None  # it has not taken the request yet: closed
            assert conn.transport is not None and conn.transport.is_closing()
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


async def _read_head_then_stop(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reset: asyncio.Event
) -> None:
    """An endpoint that takes a request head and none of its body; it resets the connection
    once ``reset`` is set."""
    await reader.readuntil(b"\r\n\r\n")
    await reset.wait()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _paused_upload(pool: Pool, port: int, client: Client) -> UpstreamConnection:
    """A connection carrying an upload the endpoint does not read: the transport's own
    ``pause_writing`` pauses ``client`` once the kernel's buffers are full."""
    conn = await pool.open("a/127.0.0.1", Endpoint("127.0.0.1", port), 2.0)
    conn.begin(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 99999999\r\n\r\n", False, client)
    for _ in range(64):  # 64 MiB at most: far beyond loopback's buffers
        conn.write(b"x" * (1 << 20))
        if client.paused:
            break
        await asyncio.sleep(0)
    assert client.paused
    return conn


@pytest.mark.parametrize("end", ["discarded", "lost"])
def test_a_connection_that_ends_mid_upload_frees_its_client(end: str) -> None:
    """The endpoint cannot take more of the body (the client is paused for it), then the
    connection is aborted by the proxy (a retry, a timeout) or reset by the endpoint: the
    client reads again. Held, a client whose body was complete would keep its keep-alive
    connection after the 502 and never have its next request read (until its idle timeout);
    an HTTP/2 client would never get its stream's window back."""

    async def main() -> None:
        reset = asyncio.Event()
        server = await asyncio.start_server(
            lambda r, w: _read_head_then_stop(r, w, reset), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        pool, client = Pool(), Client()
        try:
            conn = await _paused_upload(pool, port, client)
            if end == "discarded":
                pool.discard(conn)
            else:
                reset.set()
                async with asyncio.timeout(2.0):
                    while not conn.closed:
                        await asyncio.sleep(0.01)
            assert not client.paused and conn.downstream is None
        finally:
            reset.set()
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


class _H2Server(asyncio.Protocol):
    """An HTTP/2 endpoint's connection: ``h2``'s server side, its preface sent."""

    def __init__(self) -> None:
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())


class _H2Endpoint(_H2Server):
    """An HTTP/2 endpoint that gives no window back (an upload stalls at 64 KiB) and, once
    ``end`` is set, resets the stream (``reset``) or answers it whole (``answered``: the
    proxy then discards the stream, whose upload never finished)."""

    def __init__(self, how: str, end: asyncio.Event) -> None:
        super().__init__()
        self.how, self.end = how, end

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                asyncio.get_running_loop().create_task(self._end(event.stream_id))
        self.transport.write(self.h2.data_to_send())

    async def _end(self, stream_id: int) -> None:
        await self.end.wait()
        if self.how == "reset":
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        else:
            self.h2.send_headers(stream_id, [(":status", "200")], end_stream=True)
        self.transport.write(self.h2.data_to_send())


@pytest.mark.parametrize("how", ["reset", "answered"])
def test_an_http2_stream_that_ends_mid_upload_frees_its_client(how: str) -> None:
    """The same for a stream of an HTTP/2 connection: its client was paused because the
    endpoint's window was closed; the stream ends (reset by the endpoint, or answered and
    then discarded by the proxy): the client reads again."""

    async def main() -> None:
        end = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _H2Endpoint(how, end), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool, client = Pool(), Client()
        try:
            key = "a/127.0.0.1"
            stream = await pool.open(key, Endpoint("127.0.0.1", port), 2.0, http2=True)
            stream.begin(b"POST / HTTP/1.1\r\nhost: a\r\n\r\n", True, client)
            stream.write(b"x" * (1 << 20))  # beyond the window and the stream's high water
            assert client.paused
            end.set()
            async with asyncio.timeout(2.0):
                while not stream.closed:
                    await asyncio.sleep(0.01)
            if how == "answered":
                assert stream.status == 200
                pool.discard(stream)
            assert not client.paused and stream.downstream is None
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


class _H2Sender(_H2Server):
    """An HTTP/2 endpoint answering each request 200 with 200 KiB, as its windows allow."""

    def __init__(self) -> None:
        super().__init__()
        self.left: dict[int, int] = {}

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.h2.send_headers(event.stream_id, [(":status", "200")])
                self.left[event.stream_id] = 200 * 1024
        for sid, left in list(self.left.items()):
            room = min(left, self.h2.local_flow_control_window(sid))
            for start in range(0, room, 16384):
                size = min(16384, room - start)
                self.h2.send_data(sid, b"x" * size, end_stream=size == left)
                left -= size
            self.left[sid] = left
            if not left:
                del self.left[sid]
        self.transport.write(self.h2.data_to_send())


def test_streams_cancelled_unread_give_their_bytes_back_to_the_connection() -> None:
    """A stream whose caller does not read keeps what it received unacknowledged; when the
    try is given up (the client gone, a timeout) those bytes go back to the connection's
    window. Kept, each such stream cut the endpoint connection's 16 MiB window for good: after
    82 streams of 200 KiB the endpoint could send nothing more on it, to any stream."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_H2Sender, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool()
        try:
            first = await pool.open("a/127.0.0.1", Endpoint("127.0.0.1", port), 2.0, http2=True)
            for i in range(100):
                stream = first if i == 0 else first.client.exchange()
                stream.begin(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", True, Client())
                stream.set_reading(False)  # the caller does not read
                async with asyncio.timeout(2.0):
                    while stream._unacked < 200 * 1024:
                        await asyncio.sleep(0.001)
                stream.abort()
            last = first.client.exchange()
            last.begin(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", True, Client())
            got: list[bytes] = []
            last.start_body(got.append)
            async with asyncio.timeout(2.0):
                while sum(map(len, got)) < 200 * 1024:
                    await asyncio.sleep(0.001)
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


class _H2Dribbler(_H2Server):
    """An HTTP/2 endpoint answering each request 200 with 60,000 DATA frames of one byte, in
    one write (raw frames, past ``h2``'s own bookkeeping), then END_STREAM."""

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                sid = event.stream_id.to_bytes(4, "big")
                self.h2.send_headers(event.stream_id, [(":status", "200")])
                self.transport.write(self.h2.data_to_send())
                self.transport.write((b"\x00\x00\x01\x00\x00" + sid + b"x") * 60000)
                self.transport.write(b"\x00\x00\x00\x00\x01" + sid)
        self.transport.write(self.h2.data_to_send())


def test_an_endpoint_sending_one_byte_frames_does_not_hold_the_loop() -> None:
    """DATA frames of one byte are data (no budget charges them) and ``h2`` takes ~40 us
    each: an endpoint's 60,000 in one write held the event loop for whole reads (~26,000
    frames, ~1 s each) before ``h2lib.FRAMES_PER_PASS``. Now no pass of the loop works
    through more, and the body arrives whole."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_H2Dribbler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool()
        try:
            with data_frames_per_pass() as per_pass:
                endpoint = Endpoint("127.0.0.1", port)
                stream = await pool.open("a/127.0.0.1", endpoint, 2.0, http2=True)
                stream.begin(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", True, Client())
                got: list[bytes] = []
                stream.start_body(got.append)
                async with asyncio.timeout(30.0):
                    while sum(map(len, got)) < 60000:
                        await asyncio.sleep(0.001)
        finally:
            pool.close()
            server.close()
            await server.wait_closed()
        assert sum(per_pass.values()) == 60001  # (and the empty one that ends the stream)
        assert max(per_pass.values()) <= h2lib.FRAMES_PER_PASS, per_pass.most_common(3)

    asyncio.run(main())
