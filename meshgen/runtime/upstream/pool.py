"""Upstream connection pools: idle keep-alive connections per endpoint, reused LIFO, and the
shared HTTP/2 connections of ``http2``/``grpc`` services.

Theory of operation: an HTTP/1.1 connection is either in use by exactly one exchange or idle in
its endpoint's stack. ``take`` pops the most recently used idle connection that is still open
(LIFO keeps few sockets warm); ``open`` opens a new one within ``connect_timeout``; ``release``
puts a connection back only if its last exchange ended cleanly with keep-alive. An HTTP/2
connection (``codec/h2_client.py``) carries many exchanges at once: ``take`` returns a new
exchange (a stream) on the endpoint's first connection with a stream to spare, and ``open``
opens another connection only when every one is at its peer's ``MAX_CONCURRENT_STREAMS`` (or
going away). Connection counts feed the service's circuit breaker (``max_connections``); at
that cap an idle HTTP/1.1 connection of the same service (to another endpoint) is closed to
make room, and a discarded connection gives its slot back at once.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Final

from ..codec.h2_client import MAX_STREAMS, H2Client, H2Exchange
from ..codec.http1 import UpstreamConnection
from ..policy.tls import UpstreamTls
from ..tables import Endpoint

MAX_IDLE_PER_ENDPOINT: Final = 128


class ConnectError(Exception):
    """Opening a connection failed or timed out (outcome ``connect-failure``)."""


class Pool:
    """Idle connections keyed by ``service/address`` (TLS settings differ per service)."""

    def __init__(self) -> None:
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._shared: dict[str, list[H2Client]] = {}  # HTTP/2 connections per key
        self._opening: dict[str, asyncio.Future[H2Client | None]] = {}  # being opened
        self._closing = False

    def take(self, key: str) -> UpstreamConnection | None:
        """An idle open connection for ``key`` (``service/address``), or a new stream on one
        of its HTTP/2 connections, if there is one."""
        if self._shared:
            clients = self._shared.get(key)
            if clients:
                for client in clients:
                    if client.available:
                        return client.exchange()
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def open(
        self,
        key: str,
        endpoint: Endpoint,
        connect_timeout: float,
        tls: UpstreamTls | None = None,
        on_open: Callable[[], bool] | None = None,
        on_close: Callable[[], None] | None = None,
        http2: bool = False,
    ) -> UpstreamConnection:
        """A new connection for ``key`` (``http2``: a new stream on a new HTTP/2 connection);
        raises :class:`ConnectError`."""
        if http2:
            pending = self._opening.get(key)
            if pending is not None:  # share the connection being opened, as Envoy does
                client = await self._join(pending, key, connect_timeout)
                if client.available:
                    return client.exchange()
        if on_open is not None and not on_open() and not (self._evict_idle(key) and on_open()):
            raise ConnectError("circuit breaker: max_connections")
        if http2:
            return await self._open_shared(key, endpoint, connect_timeout, tls, on_close)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                if tls is None:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(key), endpoint.host, endpoint.port
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(key),
                        endpoint.host,
                        endpoint.port,
                        ssl=tls.context,
                        server_hostname=tls.server_hostname(endpoint.host),
                    )
                    assert conn.transport is not None
                    try:
                        tls.check_peer(conn.transport.get_extra_info("ssl_object"))
                    except ssl.SSLError:
                        conn.abort()
                        raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            if on_close is not None:
                on_close()
            raise ConnectError(f"{endpoint.address}: {exc or type(exc).__name__}") from exc
        conn.on_lost = on_close
        return conn

    async def _join(
        self, pending: asyncio.Future[H2Client | None], key: str, timeout: float
    ) -> H2Client:
        """The HTTP/2 connection another try is opening to the same endpoint, once open."""
        try:
            async with asyncio.timeout(timeout):
                client = await asyncio.shield(pending)
        except TimeoutError as exc:
            raise ConnectError(f"{key}: timed out waiting for a connection") from exc
        if client is None:
            raise ConnectError(f"{key}: the shared connection failed")
        return client

    async def _open_shared(
        self,
        key: str,
        endpoint: Endpoint,
        connect_timeout: float,
        tls: UpstreamTls | None,
        on_close: Callable[[], None] | None,
    ) -> H2Exchange:
        """A new HTTP/2 connection, pooled while it lives; its first exchange. Tries for the
        same endpoint meanwhile wait for it (:meth:`_join`) rather than open their own."""
        opening = self._opening[key] = asyncio.get_running_loop().create_future()
        client: H2Client | None = None
        try:
            client = await self._connect_shared(key, endpoint, connect_timeout, tls, on_close)
            return client.exchange()
        finally:
            opening.set_result(client)
            if self._opening.get(key) is opening:  # (a later opener may have replaced it)
                del self._opening[key]

    async def _connect_shared(
        self,
        key: str,
        endpoint: Endpoint,
        connect_timeout: float,
        tls: UpstreamTls | None,
        on_close: Callable[[], None] | None,
    ) -> H2Client:
        loop = asyncio.get_running_loop()
        scheme = b"http" if tls is None else b"https"
        clients = self._shared.get(key)
        if clients is None:
            clients = self._shared[key] = []
        # Until its SETTINGS arrive, a new connection expects the limit the endpoint announced
        # on the others (streams sharing it meanwhile must not exceed it).
        limit = min((c.max_streams for c in clients), default=MAX_STREAMS)
        try:
            async with asyncio.timeout(connect_timeout):
                if tls is None:
                    _, client = await loop.create_connection(
                        lambda: H2Client(key, scheme, limit), endpoint.host, endpoint.port
                    )
                else:
                    _, client = await loop.create_connection(
                        lambda: H2Client(key, scheme, limit),
                        endpoint.host,
                        endpoint.port,
                        ssl=tls.context,
                        server_hostname=tls.server_hostname(endpoint.host),
                    )
                    assert client.transport is not None
                    ssl_obj = client.transport.get_extra_info("ssl_object")
                    try:
                        tls.check_peer(ssl_obj)
                        if ssl_obj.selected_alpn_protocol() != "h2":
                            raise ssl.SSLError("the endpoint did not choose ALPN h2")
                    except ssl.SSLError:
                        client.transport.abort()
                        raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            if on_close is not None:
                on_close()
            raise ConnectError(f"{endpoint.address}: {exc or type(exc).__name__}") from exc
        clients.append(client)

        def lost() -> None:
            if client in clients:
                clients.remove(client)
            if on_close is not None:
                on_close()

        client.on_lost = lost
        if self._closing:
            client.close()
        return client

    def release(self, conn: UpstreamConnection) -> None:
        """Keep ``conn`` for reuse, or close it when it cannot carry another exchange."""
        if conn.closed:
            return
        stack = self._idle.get(conn.key)
        if stack is None:  # (not setdefault: that makes a list on every call)
            stack = self._idle[conn.key] = []
        if not conn.go_idle() or self._closing or len(stack) >= MAX_IDLE_PER_ENDPOINT:
            conn.abort()
            return
        stack.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """Close ``conn`` for good and give its slot back to the circuit breaker now, not
        when the transport reports the loss a loop turn later (a waiter may need it)."""
        on_lost, conn.on_lost = conn.on_lost, None
        conn.abort()
        if on_lost is not None:
            on_lost()

    def _evict_idle(self, key: str) -> bool:
        """Close one idle connection of ``key``'s service (to another endpoint, as the
        service's connection cap is reached) so a new one may open; False if there is none."""
        prefix = key[: key.rindex("/") + 1]
        for other, stack in self._idle.items():
            if not other.startswith(prefix):
                continue
            while stack:
                conn = stack.pop(0)  # the least recently used
                if not conn.closed:
                    self.discard(conn)
                    return True
        return False

    def close(self) -> None:
        """Close every idle connection; later releases close too."""
        self._closing = True
        for stack in self._idle.values():
            for conn in stack:
                conn.abort()
        self._idle.clear()
        for clients in list(self._shared.values()):
            for client in list(clients):
                client.close()
        self._shared.clear()
