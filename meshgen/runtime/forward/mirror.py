"""Request mirroring (shadowing): a fire-and-forget copy of a request to another service.

Theory of operation: the copy never delays or affects the caller. It is a request of its own,
run by the request machine (``forward/attempt.py``, entered at ``FORWARD``: no routing, no
retries, the mirror service's ``timeout`` and ``idle_timeout``) through the whole-message
driver (``forward/call.py``) over the shared connection pool, as Envoy's shadow writer goes
through the same client as ordinary requests: it is admitted by the service's circuit breaker,
counted in ``meshgen_upstream_requests_total`` and reported to outlier detection like any try.
Its head is the one the endpoint of the original request gets (rewrite and header operations
included, ``forward/heads.py``) with ``-shadow`` appended to the Host (Envoy's convention), so
the target can tell shadow traffic apart. Its answer is read and dropped, up to
:data:`DRAIN_LIMIT` bytes so the connection can serve again; a longer answer closes the
connection (an endless one would hold a mirror for ever). A failure is logged at debug.

A request body is mirrored whole, once it has arrived, if it fits the replay buffer
(``http1.REPLAY_LIMIT``, kept anyway for retries); head and body go out in one write. Bodies
past the buffer are not mirrored, and neither are requests beyond :data:`MAX_MIRRORS` copies
in flight: both are counted in :attr:`Mirrors.skipped` and logged at debug.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from ..codec.http1 import RequestBody
from .attempt import FORWARD, LOCAL, Attempt
from .call import call
from .heads import Outgoing, request_head
from .tries import Upstream

if TYPE_CHECKING:
    from .generation import Generation

log = logging.getLogger("meshgen.proxy")
MAX_MIRRORS: Final = 64
DRAIN_LIMIT: Final = 64 * 1024
"""Most bytes of a mirror's answer read (and dropped); past them its connection is closed."""


class Mirrors:
    """Mirrors of one proxy (or client), sharing its connection pool."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.in_flight = 0
        self.skipped = 0  # bodies too large for the replay buffer, or too many in flight

    def mirror(
        self, gen: Generation, att: Attempt, req: Outgoing, body: RequestBody | bytes | None
    ) -> None:
        """Copy the request of ``att`` to its ``mirror`` now, or when its body is complete."""
        if req.upgrade:
            return
        if body is None or isinstance(body, bytes):
            self._fire(gen, att, req, body or b"")
        elif body.complete:
            self._fire(gen, att, req, body.buffered())
        elif body.replay is not None:
            body.on_end = lambda data: self._fire(gen, att, req, data)
        else:
            self._fire(gen, att, req, None)

    def _fire(self, gen: Generation, att: Attempt, req: Outgoing, body: bytes | None) -> None:
        mirror, route = att.mirror, att.route
        assert mirror is not None and route is not None
        if body is None or self.in_flight >= MAX_MIRRORS:
            self.skipped += 1
            log.debug(
                "mirror to %s skipped: %s",
                mirror.service,
                "body over the replay limit" if body is None else "too many mirrors in flight",
            )
            return
        loop = asyncio.get_running_loop()
        head = request_head(req, route, att.path, att.query, gen.ops(route)[0], len(body))
        shadow = Attempt.shadow(gen, gen.shadow_target(mirror), head)
        action = shadow.step(FORWARD)
        if action == LOCAL:
            log.debug("mirror to %s not sent: %s", mirror.service, shadow.answer)
            return
        self.in_flight += 1
        task = loop.create_task(self._shadow(gen, shadow, action, body))
        task.add_done_callback(self._ended)

    def _ended(self, _task: asyncio.Task[None]) -> None:
        self.in_flight -= 1

    async def _shadow(self, gen: Generation, shadow: Attempt, action: int, body: bytes) -> None:
        """Send the copy and drain the answer."""
        reply = await call(self.upstream, gen, shadow, action, body, DRAIN_LIMIT, keep=False)
        if reply is None:
            log.debug("mirror to %s failed: %s", shadow.service, shadow.answer)
        elif reply.over_limit:
            log.debug("mirror to %s: answer over %d bytes, connection closed", shadow.service,
                      DRAIN_LIMIT)  # fmt: skip
