"""A hostile upstream for the runtime's tests: it answers each request by its path, badly.

Run as a script (``script_backend(SOURCE)``): it prints its port, then serves. Requests are
parsed with httptools; each answer is written in ONE ``write`` so that what the proxy reads in
one packet is what the path asks for. Well-behaved answers (``/ok/NAME``: 200 with body
``NAME``) let a test check that the next client gets its own answer. Paths:

``/unsolicited``  200 "first", then 100 ms later an injected response on the idle connection
``/unsolicited-head`` the same, but only the injected response's head (its body never comes)
``/two``          200 "one" and an injected response in the same packet
``/nominated``    200 "ok" whose ``Connection`` lists ``X-Hop`` (a field for this hop alone)
``/endless-head`` a response head that never ends (a header value 8 KiB per write)
``/many-headers`` a response head with 10,000 headers
``/endless-body`` 200 chunked, chunks for ever (the client stops reading)
``/1xx-flood``    interim 100 responses for ever
``/garbage``      bytes that are no HTTP
``/mid-body``     200 with content-length 100, 10 bytes, then close
``/cl-te``        a response with both Content-Length and Transfer-Encoding
``/dup-cl``       a response with two Content-Length lines
``/gzip-chunked`` a response with ``Transfer-Encoding: gzip, chunked``
``/bad-chunk-first`` a 200 head and an invalid chunk in the same packet
``/bad-chunk-late``  a 200 chunked head with one chunk, 200 ms later an invalid chunk
``/101``          101 Switching Protocols to a request that asked for no upgrade
``/refuse-upgrade`` 426 to an upgrade request, echoing its body; then plain HTTP/1.1 goes on
``/refuse-upgrade-slow`` the same after 0.5 s
``/slow``         200 after 1.5 s
``/count``        200 with the number of body bytes received (uploads)
``/stall-read``   stops reading the request body for 3 s, then answers like ``/count``
``/whoami``       200 with this connection's serial number (which connection the proxy reused)
``/early``        200 "early SERIAL" as soon as the head is in; the body is read on, in silence
``/short-idle``   200 with content-length 100, 10 bytes, then silence on an open connection
``/close-then-bytes`` 200 with ``Connection: close``, an injected response after it, no close
``/1xx-body``     an interim 150 with a body (an injected response), then 200 "final"
``/early-hints``  103 Early Hints and 100 Continue, then 200 "final"
``/1xx-trickle``  interim 100 responses, one every 100 ms, for ever
``/204-body``, ``/304-body``, ``/head-body`` that status (or 200 to a HEAD) with a
                  content-length and, as its body, an injected response
``/trailer-flood`` 200 chunked, one chunk, then a trailer field that never ends
``/trickle-head`` a response head, one byte every 50 ms, for ever
``/trickle-body`` 200 with content-length 1000000, one body byte every 50 ms
``/status/NNN``   a response with status NNN (any three digits) and body "hi"
``/bytes/N``      200 with N bytes of body, written as the proxy reads them (64 KiB at a time)
"""

from __future__ import annotations

import asyncio
import sys

import httptools

INJECTED = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nx-injected: 1\r\n\r\ninjected"
SERIALS = iter(range(1, 1 << 30))


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Hostile(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = b""
        self.size = 0  # body bytes of the request
        self.length = 0  # the request's Content-Length
        self.upgrade_left = 0  # body bytes of an upgrade request still to come
        self.stop = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.serial = next(SERIALS)
        self.answered = False  # ``/early`` answered before its body came

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop = True

    def data_received(self, data: bytes) -> None:
        if self.upgrade_left:  # llhttp leaves an upgrade request's body to us
            body, data = data[: self.upgrade_left], data[self.upgrade_left :]
            self.on_body(body)
            self.upgrade_left -= len(body)
            if self.upgrade_left:
                return
            self.answer()
        if not data:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.parser = httptools.HttpRequestParser(self)  # refused: plain HTTP/1.1 goes on
            self.upgrade_left = self.length
            if not self.upgrade_left:
                self.answer()
            self.data_received(data[exc.args[0] :])
        except httptools.HttpParserError:
            self.t.close()

    def on_message_begin(self) -> None:
        self.length = 0
        self.answered = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length":
            self.length = int(value)

    def on_headers_complete(self) -> None:
        if self.url == b"/stall-read":
            self.t.pause_reading()
            asyncio.get_running_loop().call_later(3, self.t.resume_reading)
        elif self.url == b"/early":
            self.answer()
            self.answered = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if len(self.body) < 65536:  # kept for echoing; big uploads are only counted
            self.body += body

    def on_message_complete(self) -> None:
        if self.answered:
            self.url, self.body, self.size = b"", b"", 0
        elif not self.parser.should_upgrade():
            self.answer()

    def answer(self) -> None:
        path, body, size = self.url.decode(), self.body, self.size
        self.url, self.body, self.size = b"", b"", 0
        loop = asyncio.get_running_loop()
        t = self.t
        if path.startswith("/ok/"):
            t.write(ok(path[4:].encode() + body))
        elif path == "/unsolicited":
            t.write(ok(b"first"))
            loop.call_later(0.1, t.write, INJECTED)
        elif path == "/unsolicited-head":
            t.write(ok(b"first"))
            loop.call_later(0.1, t.write, INJECTED[: INJECTED.index(b"\r\n\r\n") + 4])
        elif path == "/two":
            t.write(ok(b"one") + INJECTED)
        elif path == "/nominated":
            t.write(ok(b"ok", b"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nx-end: 1\r\n"))
        elif path == "/endless-head":
            t.write(b"HTTP/1.1 200 OK\r\nx-long: ")
            self.tasks.add(loop.create_task(self._forever(b"a" * 8192)))
        elif path == "/many-headers":
            t.write(b"HTTP/1.1 200 OK\r\n" + b"x-h: v\r\n" * 10000 + b"content-length: 0\r\n\r\n")
        elif path == "/endless-body":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            self.tasks.add(loop.create_task(self._forever(b"2000\r\n" + b"b" * 8192 + b"\r\n")))
        elif path == "/1xx-flood":
            self.tasks.add(loop.create_task(self._forever(b"HTTP/1.1 100 Continue\r\n\r\n" * 64)))
        elif path == "/garbage":
            t.write(b"\x00\x01 this is no HTTP at all\r\n\r\n")
        elif path == "/mid-body":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            loop.call_later(0.05, t.close)
        elif path == "/cl-te":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
        elif path == "/dup-cl":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc")
        elif path == "/gzip-chunked":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
        elif path == "/bad-chunk-first":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
        elif path == "/bad-chunk-late":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            loop.call_later(0.2, t.write, b"zz\r\n")
        elif path == "/101":
            t.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n"
                    b"\r\n")  # fmt: skip
        elif path in ("/refuse-upgrade", "/refuse-upgrade-slow"):
            out = b"refused " + body
            refusal = b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: %d\r\n\r\n" % len(out)
            loop.call_later(0.5 if path.endswith("slow") else 0, t.write, refusal + out)
        elif path == "/slow":
            loop.call_later(1.5, t.write, ok(b"late"))
        elif path in ("/count", "/stall-read"):
            t.write(ok(b"%d" % size))
        elif path == "/whoami":
            t.write(ok(b"%d" % self.serial))
        elif path == "/early":
            t.write(ok(b"early %d" % self.serial))
        elif path == "/short-idle":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        elif path == "/close-then-bytes":
            t.write(ok(b"closing", b"connection: close\r\n") + INJECTED)
        elif path == "/1xx-body":
            t.write(b"HTTP/1.1 150 Odd\r\ncontent-length: %d\r\n\r\n%s%s"
                    % (len(INJECTED), INJECTED, ok(b"final")))  # fmt: skip
        elif path == "/early-hints":
            t.write(b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n"
                    b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"))  # fmt: skip
        elif path == "/1xx-trickle":
            self.tasks.add(loop.create_task(self._forever(b"HTTP/1.1 100 Continue\r\n\r\n", 0.1)))
        elif path in ("/204-body", "/304-body", "/head-body"):
            status = b"200 OK" if path == "/head-body" else path[1:4].encode() + b" X"
            t.write(
                b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(INJECTED), INJECTED)
            )
        elif path == "/trailer-flood":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: ")
            self.tasks.add(loop.create_task(self._forever(b"t" * 8192)))
        elif path == "/trickle-head":
            t.write(b"HTTP/1.1 200 OK\r\nx-slow: ")
            self.tasks.add(loop.create_task(self._forever(b"s", 0.05)))
        elif path == "/trickle-body":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
            self.tasks.add(loop.create_task(self._forever(b"b", 0.05)))
        elif path.startswith("/bytes/"):
            size = int(path[7:])
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            self.tasks.add(loop.create_task(self._bytes(size)))
        elif path.startswith("/status/"):
            t.write(b"HTTP/1.1 %s X\r\ncontent-length: 2\r\n\r\nhi" % path[8:].encode())
        else:
            t.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")

    async def _bytes(self, size: int) -> None:
        """``size`` bytes, 64 KiB at a time, while the proxy reads them (back-pressure)."""
        piece = b"b" * 65536
        while size > 0 and not self.stop:
            self.t.write(piece[:size])
            size -= len(piece)
            while not self.stop and self.t.get_write_buffer_size() > 65536:
                await asyncio.sleep(0.005)

    async def _forever(self, piece: bytes, pause: float = 0.001) -> None:
        while not self.stop:
            self.t.write(piece)
            await asyncio.sleep(pause)
            while not self.stop and self.t.get_write_buffer_size() > 1 << 20:
                await asyncio.sleep(0.01)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Hostile, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
