"""The sidecar proxy: listeners' connections, each request driven through the request machine.

Theory of operation: a :class:`~.forward.generation.Generation` holds everything derived from
one ``Tables`` value. Each request reads the current generation once when it starts, so a
reload (``Proxy.swap``) changes what *new* requests see while in-flight ones finish on the old.
Every decision about a request (route, redirect, access, rate limits, fault, mirror, tries,
retries, circuit breaking; docs/architecture.md) is made by its
:class:`~.forward.attempt.Attempt`; the proxy runs it either in protocol callbacks
(:meth:`Proxy.fast`, ``fastpath.py``) or in the connection's coroutine (:meth:`Proxy.handle`,
for requests with a body, pipelined ones and upgrades); the attempt answers locally if its
machine made an answer, and the proxy accounts for the request (:meth:`Proxy.settle`). The
response head is committed only after a try is accepted, so a failed try can still be
retried; after that the body streams.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from time import monotonic
from typing import IO, Protocol

from ..codec.guard import ListenerGuard, reasons
from ..codec.http1 import Request, ServerConnection
from ..tables import Listener
from .attempt import LOCAL, START, Attempt
from .exchange import Exchange
from .fastpath import ProxyAttempt
from .forwarder import Forwarder
from .generation import Generation
from .h2_driver import H2Attempt, H2Streams
from .mirror import Mirrors
from .tries import drive

log = logging.getLogger("meshgen.proxy")


class Rejections(Protocol):
    """Where a listener's refusals are counted (``metrics.Metrics``)."""

    def inc_rejected(self, listener: str, reason: str) -> None: ...

    def declare_listener(self, listener: str, reasons: Iterable[str]) -> None: ...


class ListenerContext:
    """What a listener's connections need: its name and the proxy (for the live generation)."""

    __slots__ = ("listener", "name", "proxy")

    def __init__(self, proxy: Proxy, listener: Listener) -> None:
        self.proxy = proxy
        self.listener = listener
        self.name = listener.name


class Proxy(Forwarder):
    """Serves requests for every listener of the current generation. ``fast_path=False``
    drives every request in a coroutine (``--no-fast-path``: the differential test)."""

    def __init__(
        self,
        generation: Generation,
        metrics: Rejections,
        access_log: IO[str] | None = None,
        *,
        fast_path: bool = True,
    ) -> None:
        self.generation = generation
        self.metrics = metrics
        self.access_log = access_log
        self.fast_path = fast_path
        self.exchange = Exchange()
        self.mirrors = Mirrors(self.exchange)
        self.connections: set[ServerConnection] = set()
        self.guards: dict[str, ListenerGuard] = {}
        self.draining = False

    def swap(self, generation: Generation) -> Generation:
        """New requests use ``generation`` from now on; returns the previous one."""
        old, self.generation = self.generation, generation
        for listener in generation.tables.listeners:
            if listener.name in self.guards:
                self.guard(listener)
        return old

    def protocol(self, listener: Listener) -> Callable[[], ServerConnection]:
        ctx = ListenerContext(self, listener)
        guard = self.guard(listener)
        fast = self.fast if self.fast_path else None
        h2 = H2Streams(self).start
        return lambda: ServerConnection(self.handle, ctx, guard, self.connections, fast, h2)

    def guard(self, listener: Listener) -> ListenerGuard:
        """The listener's guard (one per name for the process; a reload updates its limits)."""
        guard = self.guards.get(listener.name)
        if guard is None:
            guard = self.guards[listener.name] = ListenerGuard(
                listener.name, listener.limits, self.metrics.inc_rejected
            )
            self.metrics.declare_listener(listener.name, reasons(listener))
        guard.limits = listener.limits
        return guard

    def start_drain(self) -> None:
        """Answer with ``connection: close`` from now on and close idle keep-alive connections."""
        self.draining = True
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
            elif conn.h2 is not None:  # GOAWAY: no new streams, the open ones finish
                conn.h2.drain()
            elif conn.active is not None:
                conn.active.keep_alive = False

    def fast(self, req: Request) -> bool:
        """Drive ``req`` from this parser callback (``fastpath.py``), or return False having
        done nothing: an upgrade, ``Expect: 100-continue`` and draining take the coroutine."""
        if req.upgrade or req.expect_continue or self.draining:
            return False
        att = ProxyAttempt.of(self, req)
        att.run(att.begin())
        return True

    async def handle(self, req: Request) -> None:
        """Drive ``req`` in the connection's coroutine."""
        if self.draining:
            req.keep_alive = False
        att = ProxyAttempt.of(self, req)
        try:
            action = att.step(START)
            if action != LOCAL:
                await drive(att, action, att)
        finally:
            att.finish()

    def mirror(self, att: Attempt) -> None:
        assert isinstance(att, (ProxyAttempt, H2Attempt))
        self.mirrors.mirror(att.generation, att, att.request, att.request.body)

    def settle(self, att: Attempt) -> None:
        att.gen.in_flight -= 1
        duration = monotonic() - att.start
        att.account(duration)
        if self.access_log is not None:
            self._log(att, duration)

    def _log(self, att: Attempt, duration: float) -> None:
        assert self.access_log is not None and isinstance(att, (ProxyAttempt, H2Attempt))
        req = att.request
        line = json.dumps(
            {
                "time": time.time(),
                "listener": att.listener,
                "client": req.conn.client_ip,
                "method": req.method,
                "target": req.target.decode("latin-1"),
                "host": req.host,
                "route": att.route_name,
                "service": att.service,
                "status": att.status,
                "duration_s": round(duration, 6),
                "request_id": (req.header("x-request-id") or ""),
            }
        )
        self.access_log.write(line + "\n")
        if self.access_log is sys.stderr:
            self.access_log.flush()
