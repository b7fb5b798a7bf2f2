"""What every driver does with the machine's actions: the loop over them, a breaker slot, a
connection, a broken try's outcome, an idle response body.

Theory of operation: :func:`drive` is the one loop over an attempt's actions (the proxy's
coroutine path, the in-process client and mirrors run it); what differs between drivers (how a
try is sent, where a response goes) comes in as :class:`Steps`. These are the asyncio halves of
the machine's decisions, so no driver classifies a broken try or waits for a slot its own way.
:class:`Upstream` owns the connection pool of one proxy (or one ``Mesh``): a try takes an idle
pooled connection of the picked endpoint or opens a new one within the connect timeout,
counted against the service's circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ..codec.upstream_conn import UpstreamConnection
from ..upstream.pool import ConnectError, Pool
from .attempt import (
    BACKOFF,
    CLIENT_TIMEOUT,
    DELAY,
    EXPIRED,
    GRANTED,
    MIRROR,
    MIRRORED,
    REFUSED_STREAM,
    RESPOND,
    STALE,
    STREAMED,
    TRY,
    WAIT,
    WOKE,
    Attempt,
)

if TYPE_CHECKING:
    from ..policy.resilience import CircuitBreaker, PendingSlot
    from ..upstream.upstreams import Picked
    from .generation import Generation

log = logging.getLogger("meshgen.proxy")

HTTP2_PROTOCOLS: Final = frozenset({"http2", "grpc"})  # services whose endpoints speak HTTP/2


class Replay(Protocol):
    """A request body as far as a broken try is concerned (``http1.RequestBody``)."""

    @property
    def replayable(self) -> bool: ...

    def detach(self) -> None: ...


class Upstream:
    """The connection pool of one proxy or client, and how a try gets a connection."""

    def __init__(self, pool: Pool | None = None) -> None:
        self.pool = pool if pool is not None else Pool()

    async def connect(
        self, gen: Generation, picked: Picked, key: str, timeout: float
    ) -> UpstreamConnection | None:
        """A new connection to ``picked`` within the connect timeout; None on failure."""
        cluster = gen.clusters[picked.service]
        breaker = gen.breakers[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            return await self.pool.open(
                key,
                picked.endpoint,
                min(cluster.connect_timeout_s, timeout),
                tls,
                breaker.try_connection,
                breaker.release_connection,
                cluster.protocol in HTTP2_PROTOCOLS,
            )
        except ConnectError as exc:
            log.debug("connect %s: %s", picked.endpoint.address, exc)
            return None


def broken(caller_closed: bool, body: Replay | None, conn: UpstreamConnection) -> str:
    """The outcome of a try whose connection broke before the response head: ``timeout``,
    ``client-timeout`` (the upload stalled on the client's side), ``refused-stream`` (an
    HTTP/2 stream the endpoint refused or dropped with GOAWAY unprocessed), ``stale`` (a reused
    connection the server had closed; retried once for free, the body detached for it) or
    ``reset``. A try aborted because the client went away is a ``reset``, never replayed."""
    if conn.timed_out:
        return CLIENT_TIMEOUT if conn.client_stalled else "timeout"
    if caller_closed:
        return "reset"
    if conn.refused:
        return REFUSED_STREAM
    if conn.reused and not conn.received and (body is None or body.replayable):
        if body is not None:
            body.detach()
        return STALE
    return "reset"


async def wait_for_slot(
    slot: PendingSlot, breaker: CircuitBreaker, loop: asyncio.AbstractEventLoop, deadline: float
) -> bool:
    """Wait for ``slot`` (queued in ``breaker`` by the machine): True once a slot is handed
    over, False when ``deadline`` (loop time) passes first. A cancelled wait leaves the slot
    to ``Attempt.close`` (``drive`` calls it), which takes it out of the queue or gives back a
    slot handed over meanwhile: one place, so it is given back once."""

    def expire() -> None:
        if breaker.cancel(slot.wake):
            slot.wake(False)

    if slot.granted is not None:
        return slot.granted
    remaining = deadline - loop.time()
    if remaining <= 0:
        expire()
        return bool(slot.granted)
    fut: asyncio.Future[bool] = loop.create_future()
    slot.on_wake = fut.set_result
    timer = loop.call_later(remaining, expire)
    try:
        return await fut
    finally:
        slot.on_wake = None
        timer.cancel()


def watch_idle(
    conn: UpstreamConnection, idle: float, loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """Abort ``conn`` once no byte arrived for ``idle`` seconds (the route's idle_timeout on a
    response body), counted from now; returns the function that stops watching. (The
    connection stamps ``last_activity`` only while someone watches: its body goes to a sink.)"""
    handle: asyncio.TimerHandle | None = None
    conn.last_activity = loop.time()

    def check() -> None:
        nonlocal handle
        left = conn.last_activity + idle - loop.time()
        if left <= 0:
            log.info("idle_timeout: closing a stalled response")
            conn.abort()
        else:
            handle = loop.call_later(left, check)

    handle = loop.call_later(idle, check)

    def stop() -> None:
        if handle is not None:
            handle.cancel()

    return stop


class Steps(Protocol):
    """What a driver does for the actions that differ between drivers: a try, passing the
    accepted response on, dropping a retried try, a mirror's copy."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    async def tried(self, att: Attempt) -> int:
        """Run ``att``'s TRY; return the machine's answer to its HEAD or FAILED."""
        ...

    async def respond(self, att: Attempt) -> None:
        """Pass the accepted response on (RESPOND)."""
        ...

    def abandon(self, att: Attempt) -> None:
        """Drop the try that is being retried (BACKOFF): its connection, the body's sink."""
        ...

    def copy(self, att: Attempt) -> None:
        """Send a copy of the request to ``att.mirror`` (MIRROR)."""
        ...


async def drive(att: Attempt, action: int, steps: Steps) -> None:
    """Carry out ``att``'s actions from ``action`` on until it answers (LOCAL) or its response
    went through (DONE); whatever it still holds is given back on the way out."""
    try:
        while True:
            if action == TRY:
                action = await steps.tried(att)
            elif action == RESPOND:
                await steps.respond(att)
                action = att.step(STREAMED)
            elif action == WAIT:
                assert att.breaker is not None
                assert att.pending is not None
                granted = await wait_for_slot(att.pending, att.breaker, steps.loop, att.wait_until)
                action = att.step(GRANTED if granted else EXPIRED)
            elif action in (BACKOFF, DELAY):
                if action == BACKOFF:
                    steps.abandon(att)
                await asyncio.sleep(att.delay)
                action = att.step(WOKE)
            elif action == MIRROR:
                steps.copy(att)
                action = att.step(MIRRORED)
            else:  # LOCAL or DONE: the caller answers or accounts
                return
    finally:
        att.close()
