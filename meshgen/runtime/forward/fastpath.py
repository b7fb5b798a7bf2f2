"""The callback fast path: the request machine driven from protocol callbacks, without a task.

Why: on one core the three task wake-ups per request (the connection's serve loop, the wait for
the response head, the handler) cost about as much as all the Python routing work. Most
requests need none of them: the machine answers locally, or its first try goes out on a pooled
keep-alive connection and the response head (usually with the whole body) arrives in one read,
written back from that ``data_received``.

Theory of operation: ``ServerConnection`` offers each request without a body to
:meth:`ProxyAttempt.run` (through ``Proxy.fast``) before queueing it. The attempt steps its
machine (``forward/attempt.py``) in the callback: a local answer is written at once, a mirror
fired, a try on a pooled connection started with :meth:`ProxyAttempt.on_head` as the callback
for its response head. Wherever an action must wait (a breaker slot, a new connection, a
backoff, a fault delay, a streaming body) the same attempt goes on in a task, in the
coroutine loop (``forward.tries.drive``, with this attempt as its ``Steps``), exactly where it
stopped: no state is copied, nothing is decided twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..codec.http1 import Request, simple_response
from ..policy.tls import peer_identity
from .attempt import (
    DONE,
    FAILED,
    HEAD,
    LOCAL,
    MIRROR,
    MIRRORED,
    RESPOND,
    STREAMED,
    TRY,
    Answer,
    Attempt,
)
from .forwarder import Forwarder
from .tries import broken, drive

if TYPE_CHECKING:
    from .generation import Generation


class ProxyAttempt(Attempt):
    """A request on the proxy: the machine, and the proxy's way of carrying out its actions,
    from callbacks (:meth:`run`) or in the coroutine loop (``forward.tries.Steps``)."""

    # The machine's ``gen`` and ``req`` again, with the proxy's types: a compiled (mypyc)
    # class cannot narrow an attribute its base declares, and these need no cast per use.
    __slots__ = ("driver", "generation", "request")

    driver: Forwarder
    generation: Generation
    request: Request

    @classmethod
    def of(cls, driver: Forwarder, req: Request) -> ProxyAttempt:
        """``req``'s machine on the driver's live generation, counted in flight until the
        driver finishes it; on a listener that checks callers, with the caller's identity."""
        gen = driver.generation
        listener = req.conn.guard.name  # the listener's guard: read natively
        caller = identity(gen, req.conn.transport) if gen.enforced[listener] else None
        gen.in_flight += 1
        # (the class by name, not ``cls``: compiled code constructs it natively)
        att = ProxyAttempt(gen, listener, req, caller, monotonic())
        att.driver = driver
        att.generation = gen
        att.request = req
        return att

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self.request.conn.loop
        assert loop is not None
        return loop

    def finish(self) -> None:
        """The request ended: its local answer (if the machine made one), then the proxy's
        accounting."""
        answer = self.answer
        if answer is not None:
            self._answer(answer)
        self.driver.settle(self)

    def _answer(self, answer: Answer) -> None:
        """Answer locally; a request whose body is still unread closes the connection."""
        req = self.request
        if req.started:
            return
        req.started = True
        if answer.close or (req.body is not None and not req.body.complete):
            req.keep_alive = False
        headers = [(b"x-request-id", req.request_id)] if req.request_id is not None else []
        headers.extend(answer.headers)
        if req.keep_alive and req.version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        body = b"" if req.method == "HEAD" else answer.body
        req.conn.send(simple_response(answer.status, body, headers, close=not req.keep_alive))
        req.conn.complete()

    # ---- the callback fast path ---------------------------------------------------------

    def run(self, action: int) -> None:
        """Step the machine in this callback while nothing has to wait (module docstring)."""
        req = self.request
        exchange = self.driver.exchange
        while True:
            if action == TRY:
                conn = exchange.pool.take(self.picked.key)
                if conn is None:  # a new connection: the coroutine connects
                    break
                self.conn = conn  # the try in flight
                conn.begin(self.head, False, req.conn, self.arrived)
                conn.complete()
                req.conn.on_close = conn.abort
                conn.arm(self.per_try)
                return
            if action in (LOCAL, DONE):
                self.finish()
                req.conn.request_done(req)
                return
            if action == MIRROR:
                self.driver.mirror(self)
                action = self.step(MIRRORED)
            elif action == RESPOND:
                conn, route = self.conn, self.route
                assert conn is not None and route is not None
                ops = self.generation.header_ops.get(route.name) or self.generation.ops(route)
                rest = exchange.respond(req, conn, ops[1], self)
                if rest is not None:
                    self._detach(self._tail(rest))
                    return
                req.conn.complete()  # before the bookkeeping: on a quiet loop it goes now
                action = self.streamed()
            else:
                break
        self._detach(self.drive(action))

    def arrived(self, exc: Exception | None) -> None:
        """The try's response head arrived (``exc`` None) or the try broke off."""
        conn = self.conn
        assert conn is not None
        conn.disarm()
        if exc is None:
            self.run(self.outcome(HEAD, conn.status))
        else:
            self.conn = None
            req = self.request
            self.run(self.outcome(FAILED, broken(req.conn.closed, req.body, conn)))

    async def drive(self, action: int) -> None:
        """Go on in the coroutine loop from ``action``, then finish."""
        try:
            await drive(self, action, self)
        finally:
            self.finish()

    async def _tail(self, rest: Coroutine[Any, Any, None]) -> None:
        """A streaming body or tunnel: await it, then the machine gives everything back."""
        try:
            await rest
            self.step(STREAMED)
        finally:
            self.close()
            self.finish()

    def _detach(self, work: Coroutine[Any, Any, None]) -> None:
        """Go on in a task; the connection's next request waits for it."""
        conn = self.request.conn
        assert conn.loop is not None
        conn.loop.create_task(conn.finish_detached(self.request, work))

    # ---- forward.tries.Steps: the coroutine loop's actions --------------------------------

    async def tried(self, att: Attempt) -> int:
        return await self.driver.exchange.tried(self.generation, self, self.request)

    async def respond(self, att: Attempt) -> None:
        assert self.conn is not None and self.route is not None
        sops = self.generation.ops(self.route)[1]
        rest = self.driver.exchange.respond(self.request, self.conn, sops, self)
        if rest is not None:
            await rest
        else:
            self.request.conn.complete()

    def abandon(self, att: Attempt) -> None:
        self.driver.exchange.abandon(self, self.request)

    def copy(self, att: Attempt) -> None:
        self.driver.mirror(self)


def identity(gen: Generation, transport: asyncio.BaseTransport | None) -> str | None:
    """The caller's verified identity (its certificate's SPIFFE ID) on ``transport``, or
    None."""
    ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
    return peer_identity(ssl_obj, gen.tables.mesh.name) if ssl_obj is not None else None
