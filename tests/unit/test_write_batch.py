"""WriteBatch: a loop pass's messages go out at its end, one send per message, or fewer: what
is batched last for one transport takes the body chunks and messages that follow it. On a quiet
loop (the pass before sent one message at most) a whole message goes as soon as a driver says
it is complete, when it is its pass's first; a busy pass stays one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

from meshgen.runtime.codec.upstream_conn import WriteBatch


class Transport:
    """Records each write (one write is one send on a real socket)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing


def _run(body: Callable[[WriteBatch], Awaitable[None]]) -> None:
    async def main() -> None:
        await body(WriteBatch(asyncio.get_running_loop()))

    asyncio.run(main())


def _t(t: Transport) -> asyncio.Transport:
    return cast(asyncio.Transport, t)


def test_a_head_and_its_body_chunks_in_one_pass_are_one_send() -> None:
    async def body(batch: WriteBatch) -> None:
        up = Transport()
        batch.send(_t(up), b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\n")
        batch.write(_t(up), b"da")
        batch.write(_t(up), b"ta")
        assert up.writes == []  # nothing before the end of the pass
        await asyncio.sleep(0)
        assert up.writes == [b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\ndata"]

    _run(body)


def test_pipelined_answers_to_one_client_are_one_send() -> None:
    async def body(batch: WriteBatch) -> None:
        down = Transport()
        batch.send(_t(down), b"one")
        batch.send(_t(down), b"two")
        await asyncio.sleep(0)
        assert down.writes == [b"onetwo"]

    _run(body)


def test_order_per_transport_holds_across_transports() -> None:
    """A chunk for a transport whose head is not the last batched message flushes the batch
    first and is written at once: never ahead of its own head."""

    async def body(batch: WriteBatch) -> None:
        a, b = Transport(), Transport()
        batch.send(_t(a), b"head-a")
        batch.send(_t(b), b"head-b")
        batch.write(_t(a), b"body-a")
        assert a.writes == [b"head-a", b"body-a"] and b.writes == [b"head-b"]
        batch.write(_t(a), b"more")  # nothing batched: straight out
        assert a.writes[-1] == b"more"
        await asyncio.sleep(0)
        assert a.writes == [b"head-a", b"body-a", b"more"] and b.writes == [b"head-b"]

    _run(body)


def test_a_closing_transport_gets_nothing() -> None:
    async def body(batch: WriteBatch) -> None:
        gone = Transport()
        batch.send(_t(gone), b"late")
        gone.closing = True
        await asyncio.sleep(0)
        assert gone.writes == []

    _run(body)


def test_on_a_quiet_loop_a_complete_message_goes_at_once() -> None:
    """After a pass with one message, the next pass's first message is written when it is
    complete (not at the end of the pass); a second message in that pass is batched again."""

    async def body(batch: WriteBatch) -> None:
        up, down = Transport(), Transport()
        batch.send(_t(up), b"first")
        batch.complete()  # the loop's first pass: not known to be quiet yet
        assert up.writes == []
        await asyncio.sleep(0)
        assert up.writes == [b"first"]
        batch.send(_t(down), b"answer")
        batch.complete()
        assert down.writes == [b"answer"]  # before the pass ends
        batch.send(_t(up), b"second")
        batch.complete()  # the pass's second message: batched
        assert up.writes == [b"first"]
        await asyncio.sleep(0)
        assert up.writes == [b"first", b"second"] and down.writes == [b"answer"]

    _run(body)


def test_a_busy_pass_keeps_the_next_pass_batched() -> None:
    """A pass with two messages makes the next pass batch even its first complete message;
    a pass with one message makes the loop quiet again."""

    async def body(batch: WriteBatch) -> None:
        a, b = Transport(), Transport()
        batch.send(_t(a), b"1")
        await asyncio.sleep(0)  # quiet from here
        batch.send(_t(a), b"2")
        batch.complete()
        batch.send(_t(b), b"3")
        await asyncio.sleep(0)  # two messages: busy
        batch.send(_t(a), b"4")
        batch.complete()
        assert a.writes == [b"1", b"2"]
        await asyncio.sleep(0)  # one message: quiet again
        assert a.writes == [b"1", b"2", b"4"]
        batch.send(_t(b), b"5")
        batch.complete()
        assert b.writes == [b"3", b"5"]

    _run(body)


def test_on_a_quiet_loop_a_head_and_its_body_still_go_as_one() -> None:
    """A driver says a request is complete once its body so far has joined its head: on a
    quiet loop too, the two are one send."""

    async def body(batch: WriteBatch) -> None:
        up = Transport()
        batch.send(_t(up), b"x")
        await asyncio.sleep(0)
        batch.send(_t(up), b"head;")
        batch.write(_t(up), b"body")
        batch.complete()
        assert up.writes == [b"x", b"head;body"]

    _run(body)
