"""``h2lib.Reading``: the rest of a read worked through on later passes of the event loop, on a
real loopback connection."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from meshgen.runtime.codec import h2lib


class Reader(asyncio.Protocol):
    """Takes ``step`` bytes a pass through a ``Reading``; raises on pass ``fail_on``."""

    def __init__(self, step: int, fail_on: int) -> None:
        self.step, self.fail_on = step, fail_on
        self.passes = 0
        self.taken = b""
        self.lost = asyncio.get_running_loop().create_future()
        self.reading = h2lib.Reading(self.take)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def take(self, data: bytes) -> bytes:
        self.passes += 1
        if self.passes == self.fail_on:
            raise RuntimeError("a handler's bug")
        self.taken += data[: self.step]
        return data[self.step :]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.reading.feed(self.transport, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def _read(payload: bytes, step: int, fail_on: int) -> tuple[Reader, list[dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    ours, theirs = socket.socketpair()
    try:
        _, reader = await loop.create_connection(lambda: Reader(step, fail_on), sock=ours)
        theirs.sendall(payload)
        async with asyncio.timeout(5):
            if fail_on:
                await reader.lost
            else:
                await _until(lambda: len(reader.taken) == len(payload))
        return reader, errors
    finally:
        theirs.close()
        if reader.transport is not None:
            reader.transport.close()


async def _until(done: Any) -> None:
    while not done():
        await asyncio.sleep(0.01)


def test_a_read_is_worked_through_a_piece_a_pass_and_loses_nothing() -> None:
    payload = bytes(range(256)) * 40
    reader, errors = asyncio.run(_read(payload, step=1000, fail_on=0))
    assert reader.taken == payload and reader.passes >= len(payload) // 1000 and not errors


def test_an_exception_on_a_later_pass_closes_the_connection() -> None:
    """Inside ``data_received`` the loop closes a transport whose protocol raised; a later
    pass runs from ``call_soon``, where nothing would: the connection stayed open with its
    reading paused until an idle timer ended it."""
    reader, errors = asyncio.run(_read(b"x" * 10_000, step=1000, fail_on=3))
    assert reader.passes == 3 and reader.taken == b"x" * 2000
    assert [type(e.get("exception")) for e in errors] == [RuntimeError]
