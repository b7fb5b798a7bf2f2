"""A TCP echo server for the tcp listener tests: ``python tcp_echo.py NAME [PORT]``.

It prints the port it bound (0: any), then for each connection: sends ``NAME\\n`` first (a
server that speaks first, like SMTP or MySQL), echoes every byte back with flow control
(``drain`` after each write, so a client that does not read slows it down), and when the
client half-closes, answers ``bye N`` (N = bytes received) and closes. ``active`` connections
are printed to stderr as they change, for tests that count them.
"""

from __future__ import annotations

import asyncio
import sys

NAME = sys.argv[1].encode()
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
active = 0


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global active
    active += 1
    print(f"active {active}", file=sys.stderr, flush=True)
    received = 0
    try:
        writer.write(NAME + b"\n")
        while data := await reader.read(65536):
            received += len(data)
            writer.write(data)
            await writer.drain()
        writer.write(b"bye %d\n" % received)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        active -= 1
        print(f"active {active}", file=sys.stderr, flush=True)
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", PORT)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
