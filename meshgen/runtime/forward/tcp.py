"""tcp listeners: forward each accepted connection's bytes to one endpoint of a tcp service.

Theory of operation. A connection goes through four phases:

``HELLO``
    only on an ``sni`` listener: bytes are collected (at most ``codec.sni.MAX_INPUT`` plus
    one read) until :func:`~..codec.sni.server_name` answers, within :data:`HELLO_WAIT`
    seconds of the accept. No answer, no name or no matching pattern: the connection is
    closed and counted in ``meshgen_connections_rejected_total`` (``sni_timeout``,
    ``sni_no_match``). Nothing is ever sent to the client: TLS is not terminated.
``CONNECTING``
    the client's reading is paused (what it sent so far waits in memory, bounded as above).
    An endpoint is picked by the service's balancer (``least_request`` counts open
    connections: :meth:`Upstreams.begin` holds one per connection; ``ring_hash`` and
    ``maglev`` hash the client's address), admitted by the circuit breaker's
    ``max_connections``, and connected within ``connect_timeout`` (TLS to the endpoint when
    the service has ``tls``, its identity checked as the HTTP proxy does). A failed connect is
    reported to outlier detection, counted in ``meshgen_upstream_requests_total`` and, while
    ``retries.attempts`` allow, retried at once on another endpoint. Nothing left to try: the
    client is closed (``no_healthy_endpoint``, ``circuit_open``, ``connect_failure``).
``FORWARDING``
    bytes are copied both ways and counted. Flow control is end to end: when one side's write
    buffer passes :data:`HIGH_WATER`, reading from the other side pauses until it drains below
    :data:`LOW_WATER`, so a fast sender and a slow reader never grow memory. A FIN from one
    side is passed on as a FIN (``write_eof``) and the other direction keeps flowing
    (half-close); once both sides have sent theirs, both are closed. A plain TCP peer gets
    exactly that; a TLS-terminated client cannot be half-closed (asyncio's TLS transport
    closes on the client's EOF), so its connection ends there.
``CLOSED``
    the endpoint's open-connection count, the breaker slot and the listener's connection slot
    are given back exactly once.

Timers: the service's ``idle_timeout`` (no byte either way; one :class:`LazyTimer`, moved on
every read) and the listener's ``max_connection_duration`` abort both sides. On a listener
that checks client certificates, the caller's identity must be allowed to every service the
listener can reach (:meth:`AccessPolicy.connection_denial`); a denial closes the connection
and counts in ``meshgen_denied_total`` (``access: audit``: the connection is forwarded, logged
and counted with ``mode="audit"``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from ..codec.sni import HELLO_WAIT, NEED_MORE, server_name
from ..codec.timers import LazyTimer
from ..policy.tcp_route import TcpPick, TcpRoute
from ..policy.tls import peer_identity
from ..upstream.balancers import request_hash_key
from ..upstream.health import CONNECTED
from .counters import Counters

if TYPE_CHECKING:
    from ..codec.guard import ListenerGuard
    from ..policy.resilience import CircuitBreaker
    from ..tables import Cluster, Listener
    from ..upstream.upstreams import Picked
    from .generation import Generation

log = logging.getLogger("meshgen.tcp")

HIGH_WATER: Final = 64 * 1024
LOW_WATER: Final = 16 * 1024
CLOSE_WAIT: Final = 10.0
"""Seconds one side may take to take in what is buffered for it after the other side is gone."""
HELLO, CONNECTING, FORWARDING, CLOSED = range(4)


class TcpProxy:
    """Serves the tcp listeners of whatever generation is live when a connection arrives."""

    def __init__(self, generation: Callable[[], Generation], metrics: Counters) -> None:
        self.generation = generation
        self.metrics = metrics
        self.connections: set[TcpConnection] = set()
        self._routes: tuple[Generation | None, dict[str, TcpRoute]] = (None, {})

    def protocol(self, listener: Listener, guard: ListenerGuard) -> Callable[[], TcpConnection]:
        name = listener.name
        return lambda: TcpConnection(self, name, guard)

    def route(self, gen: Generation, listener: str) -> TcpRoute | None:
        """The forwarding decision of ``listener`` in ``gen`` (built once per generation)."""
        built, routes = self._routes
        if built is not gen:
            clusters = gen.clusters
            routes = {
                lst.name: TcpRoute(lst, clusters, gen.rng)
                for lst in gen.tables.listeners
                if lst.protocol == "tcp"
            }
            self._routes = (gen, routes)
        return routes.get(listener)

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()


class TcpConnection(asyncio.Protocol):
    """The client side of one forwarded connection (see the module docstring)."""

    def __init__(self, tcp: TcpProxy, listener: str, guard: ListenerGuard) -> None:
        self.tcp = tcp
        self.listener = listener
        self.guard = guard
        self.phase = HELLO
        self.admitted = False
        self.down: asyncio.Transport | None = None
        self.up: _Upstream | None = None  # once forwarding
        self.pending = bytearray()  # read before the upstream connection opened
        self.down_eof = False
        self.down_lost = False
        self.gen: Generation | None = None
        self.picked: Picked | None = None
        self.breaker: CircuitBreaker | None = None
        self.rx: tuple[str, str, str] = ("", "", "")
        self.tx: tuple[str, str, str] = ("", "", "")
        self.idle_s = CLOSE_WAIT
        self.loop = asyncio.get_running_loop()
        self.idle = LazyTimer(self.loop, self.abort)
        self.timers: list[asyncio.TimerHandle] = []
        self.task: asyncio.Task[None] | None = None

    # ---- client side -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.down = transport
        if not self.guard.admit(transport):
            self.phase = CLOSED
            return
        self.admitted = True
        self.tcp.connections.add(self)
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        gen = self.gen = self.tcp.generation()
        route = self.tcp.route(gen, self.listener)
        if route is None:  # a reload removed the listener while this was accepted
            self.abort()
            return
        if not self._admitted(gen, route):
            return
        duration = route.listener.limits.max_connection_duration_s
        if duration is not None:
            self.timers.append(self.loop.call_later(duration, self.abort))
        if route.reads_hello:
            self.timers.append(self.loop.call_later(HELLO_WAIT, self._hello_expired))
            return
        self._connect(route.pick())

    def _admitted(self, gen: Generation, route: TcpRoute) -> bool:
        """Access by identity on a listener that checks callers; False when denied."""
        if gen.access is None or not gen.enforced.get(self.listener):
            return True
        assert self.down is not None
        sslobj = self.down.get_extra_info("ssl_object")
        caller = peer_identity(sslobj, gen.tables.mesh.name) if sslobj is not None else None
        denied = gen.access.connection_denial(caller, route.services)
        if denied is None:
            return True
        audit = gen.audit[self.listener]
        self.tcp.metrics.inc_denied(
            self.listener, caller or "", denied, "audit" if audit else "enforce"
        )
        if audit:  # a dry run of the rules: forwarded, logged (rate limited) and counted
            gen.audit_log.connection_denied(self.listener, caller, denied)
            return True
        self.abort()
        return False

    def data_received(self, data: bytes) -> None:
        up = self.up
        if up is not None:
            if up.open:
                up.transport.write(data)
                self.tcp.metrics.add_tcp_bytes(self.rx, len(data))
                self.idle.set(self.loop.time() + self.idle_s)
            return
        if self.phase == CLOSED:
            return
        self.pending += data
        if self.phase != HELLO:  # CONNECTING: pause again, so at most one more read waits here
            assert self.down is not None  # (uvloop starts reading after connection_made, so a
            self.down.pause_reading()  # pause made there does not hold)
            return
        name = server_name(bytes(self.pending))
        if name is NEED_MORE:
            return
        assert self.gen is not None
        route = self.tcp.route(self.gen, self.listener)
        pick = route.pick(name) if route is not None else None
        if pick is None:
            self.reject("sni_no_match")
            return
        self._connect(pick)

    def eof_received(self) -> bool:
        self.down_eof = True
        up = self.up
        if up is None:
            if self.phase == CONNECTING:
                return True  # passed on once connected
            self.abort()  # the client gave up before anything could be forwarded
            return False
        if up.open:
            up.end(None) if up.eof else up.send_eof()
        assert self.down is not None
        # False closes the client side: both said all, or a TLS client (it cannot half-close)
        return self.down.can_write_eof() and not up.eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.down_lost = True
        up = self.up
        if up is not None and up.open:
            up.end(exc)
        self._finish()

    def pause_writing(self) -> None:
        """The client reads slower than the endpoint sends: stop reading the endpoint."""
        if self.up is not None:
            self.up.pause(True)

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.pause(False)

    # ---- connecting ------------------------------------------------------------------------

    def _hello_expired(self) -> None:
        if self.phase == HELLO:
            self.reject("sni_timeout")

    def _connect(self, pick: TcpPick | None) -> None:
        assert self.down is not None
        if pick is None:
            self.reject("no_healthy_endpoint")
            return
        self.phase = CONNECTING
        self.down.pause_reading()
        self.task = self.loop.create_task(self._open(pick))

    async def _open(self, pick: TcpPick) -> None:
        """Pick, admit and connect, with ``retries.attempts`` further attempts elsewhere."""
        gen = self.gen
        assert gen is not None and self.down is not None
        upstreams, clusters = gen.upstreams, gen.clusters
        cluster = clusters[pick.service]
        attempts = 1 + (cluster.retries.attempts if cluster.retries is not None else 0)
        peer = self.down.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        key = request_hash_key(cluster.load_balancer, _no_header, source)
        tried: frozenset[str] = frozenset()
        gen.in_flight += 1
        try:
            for attempt in range(attempts):
                if attempt:
                    self.tcp.metrics.inc_retry(pick.service)
                picked = upstreams.pick(pick.service, pick.subset, key, tried)
                if picked is None:
                    self.reject("no_healthy_endpoint")
                    return
                breaker = gen.breakers[picked.service]
                if not breaker.try_connection():
                    self.reject("circuit_open")
                    return
                upstreams.begin(picked)
                try:
                    up = await self._try(gen, picked, clusters[picked.service])
                except BaseException:  # cancelled: the client went away
                    upstreams.end(picked)
                    breaker.release_connection()
                    raise
                if up is not None and up.open and self.phase == CONNECTING:
                    self.picked, self.breaker = picked, breaker
                    self._forward(up, clusters[picked.service])
                    return
                upstreams.end(picked)
                breaker.release_connection()
                if up is not None:  # it opened, but closed again or the client left meanwhile
                    up.discard()
                if self.phase != CONNECTING:
                    return
                tried |= {picked.endpoint.address}
            self.reject("connect_failure")
        finally:
            gen.in_flight -= 1

    async def _try(self, gen: Generation, picked: Picked, cluster: Cluster) -> _Upstream | None:
        """One connect attempt: the endpoint connection, or None (reported and counted)."""
        endpoint = picked.endpoint
        metrics = self.tcp.metrics
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        up = _Upstream(self)
        try:
            async with asyncio.timeout(cluster.connect_timeout_s):
                await self.loop.create_connection(
                    lambda: up,
                    endpoint.host,
                    endpoint.port,
                    ssl=tls.context if tls is not None else None,
                    server_hostname=tls.server_hostname(endpoint.host) if tls else None,
                )
            if tls is not None:
                tls.check_peer(up.transport.get_extra_info("ssl_object"))
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            up.discard()
            outcome = "timeout" if isinstance(exc, TimeoutError) else "connect-failure"
            log.debug("tcp listener %s: connect to %s: %r", self.listener, endpoint.address, exc)
            gen.upstreams.report(picked, outcome)
            metrics.inc_upstream(picked.service, endpoint.address, outcome)
            return None
        except BaseException:
            up.discard()  # cancelled: the client went away while this was connecting
            raise
        gen.upstreams.report(picked, CONNECTED)
        metrics.inc_upstream(picked.service, endpoint.address, CONNECTED)
        return up

    def _forward(self, up: _Upstream, cluster: Cluster) -> None:
        """Start copying: what the client sent so far first, then both ways."""
        assert self.down is not None and self.picked is not None
        self.phase = FORWARDING
        self.up = up
        service = self.picked.service
        self.rx, self.tx = (self.listener, service, "rx"), (self.listener, service, "tx")
        self.tcp.metrics.tcp_opened(self.listener, service)
        self.idle_s = cluster.idle_timeout_s
        self.idle.set(self.loop.time() + self.idle_s)
        if self.pending:
            up.transport.write(bytes(self.pending))
            self.tcp.metrics.add_tcp_bytes(self.rx, len(self.pending))
            self.pending = bytearray()
        if self.down_eof:
            up.send_eof()
        up.start()
        self.down.resume_reading()

    # ---- closing ---------------------------------------------------------------------------

    def upstream_lost(self, exc: Exception | None) -> None:
        """The endpoint connection is gone: close the client after what is buffered for it
        (at most CLOSE_WAIT more), and give the endpoint's slots back."""
        self._release_upstream()
        down = self.down
        if down is not None and not down.is_closing():
            down.abort() if exc is not None else down.close()
        self.idle_s = min(self.idle_s, CLOSE_WAIT)
        self.idle.set(self.loop.time() + self.idle_s)

    def reject(self, reason: str) -> None:
        """Close without forwarding, counted under ``reason``."""
        if self.phase == CLOSED:
            return
        self.guard.reject(reason)
        log.debug("tcp listener %s: connection closed: %s", self.listener, reason)
        self.abort()

    def abort(self) -> None:
        """End both sides at once (timeouts, refusals, shutdown)."""
        if self.up is not None and self.up.open:
            self.up.end(ConnectionAbortedError())
        if self.down is not None:
            self.down.abort()
        self._finish()

    def _release_upstream(self) -> None:
        if self.picked is not None and self.gen is not None:
            self.gen.upstreams.end(self.picked)
            self.tcp.metrics.tcp_closed(self.listener, self.picked.service)
            self.picked = None
        if self.breaker is not None:
            self.breaker.release_connection()
            self.breaker = None

    def _finish(self) -> None:
        """The client side is gone: give back what this connection holds (once)."""
        self.phase = CLOSED
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()
        if self.up is not None and self.up.open:
            self.idle.set(self.loop.time() + min(self.idle_s, CLOSE_WAIT))
            return  # the endpoint still takes in what the client sent; upstream_lost ends it
        self.idle.close()
        self._release_upstream()
        if self.admitted:
            self.admitted = False
            self.guard.release()
            self.tcp.connections.discard(self)


class _Upstream(asyncio.Protocol):
    """The endpoint side of a forwarded connection: reading waits for :meth:`start`."""

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.open = False
        self.started = False
        self.paused = False  # by the client's write buffer
        self.eof = False
        self.early = b""  # read before start (uvloop may deliver one read despite the pause)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.open = True
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        transport.pause_reading()  # until the endpoint is checked and the client attached

    def start(self) -> None:
        self.started = True
        if self.early:
            early, self.early = self.early, b""
            self.data_received(early)
        if not self.paused:
            self.transport.resume_reading()

    def pause(self, paused: bool) -> None:
        if self.paused == paused or not self.open:
            return
        self.paused = paused
        if self.started:
            self.transport.pause_reading() if paused else self.transport.resume_reading()

    def discard(self) -> None:
        """An attempt that is not used (failed check, timeout, cancelled)."""
        if self.open:
            self.open = False
            self.transport.abort()

    def send_eof(self) -> None:
        """The client's FIN: a FIN to the endpoint (TLS endpoints: close_notify and close)."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.end(None)

    def end(self, exc: Exception | None) -> None:
        if self.open:
            self.transport.abort() if exc is not None else self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.started:
            self.early += data
            self.transport.pause_reading()
            return
        conn = self.conn
        down = conn.down
        if down is None or down.is_closing():
            return
        down.write(data)
        conn.tcp.metrics.add_tcp_bytes(conn.tx, len(data))
        conn.idle.set(conn.loop.time() + conn.idle_s)

    def eof_received(self) -> bool:
        self.eof = True
        conn = self.conn
        down = conn.down
        if down is not None and not down.is_closing():
            if conn.down_eof or not down.can_write_eof():
                down.close()  # both said all (or a TLS client): flush and close
            else:
                down.write_eof()
        if conn.down_eof:
            self.end(None)
        return self.transport.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        was_open, self.open = self.open, False
        if was_open and self.conn.up is self:
            self.conn.upstream_lost(exc)
            if self.conn.down_lost:
                self.conn._finish()

    def pause_writing(self) -> None:
        """The endpoint reads slower than the client sends: stop reading the client."""
        down = self.conn.down
        if down is not None and not down.is_closing():
            down.pause_reading()

    def resume_writing(self) -> None:
        down = self.conn.down
        if down is not None and not down.is_closing() and self.conn.phase == FORWARDING:
            down.resume_reading()


def _no_header(name: str) -> str | None:
    """A connection has no headers (only ``source_ip`` hashing applies)."""
    return None
