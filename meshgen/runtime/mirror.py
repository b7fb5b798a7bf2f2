"""Request mirroring (shadowing): a fire-and-forget copy of a request to another service.

Theory of operation: the copy never delays or affects the caller. It runs as its own task over
the shared connection pool, its answer is read and dropped, and any failure is logged at debug.
A request body is mirrored whole, once it has arrived, if it fits the replay buffer
(``http1.REPLAY_LIMIT``, kept anyway for retries); head and body go out in one write. Bodies
past the buffer are not mirrored, and neither are requests beyond :data:`MAX_MIRRORS` copies
in flight: both are counted in :attr:`Mirrors.skipped` and logged at debug. The copy's Host gets
a ``-shadow`` suffix (Envoy's convention) so the target can tell shadow traffic apart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .exchange import Exchange
from .heads import NO_OPS, request_head
from .http1 import Request
from .pool import ConnectError
from .tables import Match, Mirror, Route
from .upstreams import Picked

if TYPE_CHECKING:
    from .proxy import Generation

log = logging.getLogger("meshgen.proxy")
MAX_MIRRORS = 64
_MIRROR_ROUTE = Route(name="", match=Match())  # no rewrite, no header operations


class Mirrors:
    """Mirrors of one proxy, sharing its exchange's pool and metrics."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.in_flight = 0
        self.skipped = 0  # bodies too large for the replay buffer, or too many in flight

    def mirror(self, gen: Generation, mirror: Mirror, req: Request, path: str, query: str) -> None:
        """Copy ``req`` to ``mirror.service`` now, or when its body is complete."""
        if req.upgrade:
            return
        body = req.body
        if body is None:
            self._fire(gen, mirror, req, path, query, b"")
        elif body.complete:
            self._fire(gen, mirror, req, path, query, body.buffered())
        elif body.replay is not None:
            body.on_end = lambda data: self._fire(gen, mirror, req, path, query, data)
        else:
            self._fire(gen, mirror, req, path, query, None)

    def _fire(
        self,
        gen: Generation,
        mirror: Mirror,
        req: Request,
        path: str,
        query: str,
        body: bytes | None,
    ) -> None:
        if body is None or self.in_flight >= MAX_MIRRORS:
            self.skipped += 1
            log.debug(
                "mirror to %s skipped: %s",
                mirror.service,
                "body over the replay limit" if body is None else "too many mirrors in flight",
            )
            return
        picked = gen.upstreams.pick(mirror.service, mirror.subset, None)
        if picked is None:
            return
        head = request_head(req, _MIRROR_ROUTE, path, query, NO_OPS, len(body))
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._shadow(gen, picked, head + body))
        task.add_done_callback(self._ended)

    def _ended(self, _task: asyncio.Task[None]) -> None:
        self.in_flight -= 1

    async def _shadow(self, gen: Generation, picked: Picked, message: bytes) -> None:
        """Send the copy (head and body in one write) and drain the answer."""
        pool, metrics = self.exchange.pool, self.exchange.metrics
        cluster = gen.clusters[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            async with asyncio.timeout(cluster.timeout_s):
                conn = await pool.acquire(
                    picked.service, picked.endpoint, cluster.connect_timeout_s, tls
                )
                conn.begin(message, False, None)
                conn.start_body(lambda _data: None)
                await conn.done
            metrics.inc_upstream(picked.service, picked.endpoint.address, conn.status)
            if conn.keep_alive:
                pool.release(conn)
            else:
                conn.abort()
        except (ConnectError, ConnectionResetError, TimeoutError) as exc:
            log.debug("mirror to %s failed: %s", picked.endpoint.address, exc)
