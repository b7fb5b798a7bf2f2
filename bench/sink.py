"""An HTTP/1.1 backend that reads every request body whole, then answers 200 with its length:
the far end of bench/h2.py's upload (nginx answers before it has read a body). Run as
``python bench/sink.py FD``: it serves the listening socket inherited as descriptor FD (bound
by the bench, never a guessed port). Parsing is httptools' (llhttp), as in the runtime.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import httptools
import uvloop


class Sink(asyncio.Protocol):
    """One keep-alive connection: count the body, answer once the message is complete."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.length = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.length = 0

    def on_body(self, body: bytes) -> None:
        self.length += len(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        text = b"%d\n" % self.length
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(text), text))


async def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    server = await asyncio.get_running_loop().create_server(Sink, sock=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
