"""A request's HTTP version: the server connection's shortcut past llhttp's
``get_http_version`` (the request line's bytes, when its read began with the head) gives what
llhttp gives, however the requests are pipelined, preceded by blank lines or cut into reads."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.runtime.codec.guard import ListenerGuard
from meshgen.runtime.codec.http1 import Request, ServerConnection
from meshgen.runtime.tables import Limits


class Transport(asyncio.Transport):
    """A transport that sends nowhere (the base class keeps the peer's address)."""

    def __init__(self) -> None:
        super().__init__({"peername": ("127.0.0.1", 5555)})

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def versions(reads: list[bytes], fast: bool) -> list[str]:
    """The versions the connection gives the requests in ``reads`` (each one
    ``data_received``), through the fast handler or the coroutine one."""
    seen: list[str] = []

    async def handler(req: Request) -> None:
        seen.append(req.version)

    def take(req: Request) -> bool:
        seen.append(req.version)
        req.conn.request_done(req)
        return True

    async def run() -> None:
        guard = ListenerGuard("edge", Limits(), lambda listener, reason: None)
        conn = ServerConnection(handler, object(), guard, None, take if fast else None)
        conn.connection_made(Transport())
        for data in reads:
            conn.data_received(data)
            for _ in range(3):
                await asyncio.sleep(0)  # the connection's coroutine takes queued requests
        conn.connection_lost(None)

    asyncio.run(run())
    return seen


REQUEST = st.tuples(
    st.sampled_from(["1.0", "1.1"]),
    st.sampled_from(["GET", "DELETE", "OPTIONS"]),
    st.sampled_from(["/", "/HTTP/1.1", "/a?b=HTTP/1.1", "/" + "x" * 40]),
    st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]),  # blank lines llhttp skips before a request
)


@settings(max_examples=150, deadline=None)
@given(st.lists(REQUEST, min_size=1, max_size=4), st.data(), st.booleans())
def test_the_version_is_llhttps_however_the_reads_fall(
    requests: list[tuple[str, str, str, bytes]], data: st.DataObject, fast: bool
) -> None:
    wire = b"".join(
        blank + f"{method} {target} HTTP/{version}\r\nHost: shop\r\n".encode()
        + (b"Connection: keep-alive\r\n" if version == "1.0" else b"") + b"\r\n"
        for version, method, target, blank in requests
    )  # fmt: skip
    cuts = sorted(data.draw(st.sets(st.integers(1, len(wire) - 1), max_size=4)))
    reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert versions(reads, fast) == [version for version, *_ in requests]


def test_http_1_0_in_one_read_after_a_1_1_request() -> None:
    """The second head of a read is not at its start: llhttp's answer, not the shortcut's."""
    wire = (
        b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n"
        b"GET / HTTP/1.0\r\nHost: shop\r\nConnection: keep-alive\r\n\r\n"
    )
    assert versions([wire], fast=True) == ["1.1", "1.0"]
    assert versions([wire], fast=False) == ["1.1", "1.0"]


def test_http_1_0_whose_head_goes_on_in_a_read_that_looks_like_a_request_line_end() -> None:
    """A head that began in an earlier read: its later read is not a request line, even where
    ``" HTTP/1.1\\r\\n"`` sits just where the version would."""
    reads = [
        b"GET / HTTP/1.0\r\n",
        b"X-ab: HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive\r\n\r\n",
    ]
    assert versions(reads, fast=True) == ["1.0"]
