"""The driver of whole-message calls: the in-process client's requests and mirrors' copies.

Theory of operation: :func:`call` carries out an :class:`~.attempt.Attempt`'s actions in the
loop the proxy's coroutine path runs (``tries.drive``), for a request whose body is in hand: a
try takes a pooled connection of the picked endpoint or opens one, writes the head and body in
one write and waits for the response head under the try's deadline; an accepted response's body
is read whole, under ``idle_timeout`` between bytes, and the connection pooled again. A body
goes on for ever if its endpoint wants: past the caller's ``limit`` the connection is closed
(the client's answer is then a 502 naming the limit; the rest of a mirror's is not read), so
no endpoint makes a call hold more than ``limit`` bytes. The
machine makes every decision (retries, backoff, breaker, outlier reports, metrics), so a call
through ``Mesh.request`` and a mirror's copy are tried exactly like a proxied request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .attempt import FAILED, HEAD, Attempt
from .tries import Upstream, broken, drive, watch_idle

if TYPE_CHECKING:
    from .generation import Generation


@dataclass(frozen=True, slots=True)
class Reply:
    """An endpoint's answer: status, head (lower-case names) and the body read; ``complete``
    is False when the connection broke before the body ended, or the body passed the call's
    limit (``over_limit``)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool
    over_limit: bool = False


class Call:
    """One whole-message call's way of carrying out the machine's actions (``tries.Steps``)."""

    def __init__(
        self,
        up: Upstream,
        gen: Generation,
        body: bytes,
        mirror: Callable[[Attempt], None] | None,
        limit: int,
        keep: bool,
    ) -> None:
        self.up = up
        self.gen = gen
        self.body = body
        self._mirror = mirror
        self.limit = limit  # most response body bytes read
        self.keep = keep  # False: the body is read and dropped (a mirror's answer)
        self.loop = asyncio.get_running_loop()
        self.reply: Reply | None = None

    async def tried(self, att: Attempt) -> int:
        """One try until the response head; returns the machine's next action."""
        up = self.up
        picked = att.picked
        conn = up.pool.take(picked.key)
        if conn is None:
            conn = await up.connect(self.gen, picked, picked.key, att.per_try)
            if conn is None:
                return att.step(FAILED, "connect-failure")
        conn.begin(att.head + self.body, False, None)
        conn.arm(att.per_try)
        try:
            await conn.headers_future  # type: ignore[misc]
        except ConnectionResetError:
            return att.step(FAILED, broken(False, None, conn))
        finally:
            conn.disarm()
        att.conn = conn
        return att.step(HEAD, conn.status)

    async def respond(self, att: Attempt) -> None:
        """The accepted response's body, whole; the connection goes back to the pool."""
        conn, att.conn = att.conn, None
        assert conn is not None and att.target is not None
        pool = self.up.pool
        if att.req.method == "HEAD":  # llhttp cannot be told the response has no body
            pool.discard(conn)
            self.reply = Reply(conn.status, conn.headers, b"", True)
            return
        chunks: list[bytes] = []
        size = 0
        limit, keep = self.limit, self.keep

        def take(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > limit:
                conn.abort()  # (idempotent: the rest of this read comes here too)
            elif keep:
                chunks.append(chunk)

        stop = watch_idle(conn, att.target.idle_timeout_s, self.loop)
        complete = True
        try:
            conn.start_body(take)
            await conn.done
        except ConnectionResetError:
            complete = False
        finally:
            stop()
        over = size > limit  # (a body read until close looks complete when aborted)
        if complete and not over and conn.keep_alive:
            pool.release(conn)
        else:
            pool.discard(conn)
        body = b"".join(chunks) if not over else b""
        self.reply = Reply(conn.status, conn.headers, body, complete and not over, over)

    def abandon(self, att: Attempt) -> None:
        conn, att.conn = att.conn, None
        if conn is not None:
            self.up.pool.discard(conn)

    def copy(self, att: Attempt) -> None:
        if self._mirror is not None:
            self._mirror(att)


async def call(
    up: Upstream,
    gen: Generation,
    att: Attempt,
    action: int,
    body: bytes,
    limit: int,
    mirror: Callable[[Attempt], None] | None = None,
    keep: bool = True,
) -> Reply | None:
    """Drive ``att`` from ``action`` on, each try sending its head and ``body``; the reply
    of the accepted try (its body up to ``limit`` bytes, kept if ``keep``), or None when the
    machine answered locally (``att.answer``)."""
    steps = Call(up, gen, body, mirror, limit, keep)
    await drive(att, action, steps)
    return steps.reply
