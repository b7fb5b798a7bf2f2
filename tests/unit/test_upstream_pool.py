"""The upstream connection pool against a real loopback endpoint: a pooled connection carries
no flow control of the exchange that ended.

An HTTP/1.1 connection stops reading while the client it streams to cannot take more, and
its client stops reading while the endpoint cannot take more of the request body. When the
response ends in the read that filled the client's side, the connection went back to the pool
paused; reused like that, it never read its next response, and the request waited for its
timeout (seen once in CI: the second request on a connection after a 512 MiB chunked download,
tests/e2e/test_streaming_memory.py). Likewise a client left paused for an endpoint that has
answered would never have its next request read; and an endpoint that has not taken all of
the last request is not given another.
"""

from __future__ import annotations

import asyncio

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
