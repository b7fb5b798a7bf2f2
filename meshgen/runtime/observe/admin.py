"""Admin server on ``admin:``: ``/metrics``, ``/healthz``, ``/config``, ``/alerts``, ``/status``.

Entry point (called by main.py)::

    async def start_admin(host: str, port: int, *,
                          tables_provider: Callable[[], Tables],
                          upstreams_provider: Callable[[], SnapshotSource | None],
                          metrics: Metrics,
                          alerts: AlertEvaluator | None = None,
                          runtime: str = "pure") -> AdminServer

``AdminServer.bound_address`` (also ``.address``) is ``"host:port"`` as bound (port 0 picks
one); ``await server.close()`` stops it and drops open keep-alive connections. Providers are
called per request, so a reload (new tables, new Upstreams) shows at once. ``/config`` is the
tables plus ``"runtime"``: ``runtime`` as given (``compiled (mypyc, <hash>)`` or ``pure``).

Theory of operation: an asyncio Protocol feeds bytes to httptools (llhttp); each complete
request is answered synchronously from in-memory state, so pipelined responses keep their
order. Only GET and HEAD exist; anything else is 405, a parse error is 400 and closes. A client
that does not read its answers is answered no further once they fill the transport's buffer:
the server stops reading it, at most :data:`MAX_WAITING` requests it already sent wait (one
more closes the connection), and they are answered as the client takes the earlier answers.
Idle with answers still unsent at ``client_idle_timeout``, it is dropped.
Clients are held to :data:`~.guard.ADMIN_LIMITS` like a listener's (``request_head_timeout``
408, ``client_idle_timeout``, 64 KiB per request: 431, URL 16 KiB: 414, at most 256
connections, and a smaller descriptor reserve than the listeners so ``/healthz`` still answers
when they are full), counted under ``listener="_admin"``.
``/status`` is an HTML page for people (refreshes itself every 5 s with a meta refresh, no
script), built with every value escaped (:mod:`.status_page`); its rows carry ``data-*``
attributes for tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, cast

import httptools

from ..codec.guard import (
    ADMIN_FD_RESERVE,
    ADMIN_LIMITS,
    ADMIN_NAME,
    HEAD,
    IDLE,
    REASONS,
    ClientClock,
    ListenerGuard,
    aborted_if_stalled,
)
from ..tables import Limits, Tables
from .alerts import AlertEvaluator
from .metrics import Metrics
from .status_page import render_status

_REASONS = {
    200: "OK",
    302: "Found",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
}
MAX_WAITING: Final = 32
"""Pipelined requests that may wait while a client does not read its answers; one more closes
the connection (the answers are rendered only once the client has taken the earlier ones)."""
JSON: Final = "application/json"
TEXT: Final = "text/plain; charset=utf-8"


class SnapshotSource(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


@dataclasses.dataclass
class _Context:
    tables_provider: Callable[[], Tables]
    upstreams_provider: Callable[[], SnapshotSource | None]
    metrics: Metrics
    alerts: AlertEvaluator | None
    runtime: str
    config: tuple[Tables, bytes] | None = None  # /config, rendered once per tables


Response = tuple[int, str, bytes, tuple[tuple[str, str], ...]]


def _json(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=2, default=str) + "\n").encode()


def _config(ctx: _Context) -> bytes:
    """The tables as JSON, rendered once per tables object (a reload makes a new one): at
    10,000 services a rendering takes the event loop for a long while, and a client that
    pipelines ``/config`` asks for it again and again."""
    tables = ctx.tables_provider()
    if ctx.config is None or ctx.config[0] is not tables:
        config = dataclasses.asdict(tables)
        ctx.config = (tables, _json({**config, "runtime": ctx.runtime}))
    return ctx.config[1]


def handle(ctx: _Context, method: str, path: str) -> Response:
    """Answer one request: (status, content type, body, extra headers). Pure but for
    providers and the ``/config`` rendering kept."""
    if method not in ("GET", "HEAD"):
        return 405, TEXT, b"only GET and HEAD\n", (("Allow", "GET, HEAD"),)
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4; charset=utf-8", ctx.metrics.render().encode(), ()
    if path == "/healthz":
        return 200, TEXT, b"ok\n", ()
    if path == "/config":
        return 200, JSON, _config(ctx), ()
    if path == "/alerts":
        firing = ctx.alerts.firing() if ctx.alerts is not None else []
        return 200, JSON, _json({"alerts": firing}), ()
    if path == "/status":
        upstreams = ctx.upstreams_provider()
        page = render_status(
            ctx.tables_provider(),
            upstreams.snapshot() if upstreams is not None else {},
            ctx.metrics,
            ctx.alerts,
            ctx.alerts.clock() if ctx.alerts is not None else time.time(),
        )
        csp = "default-src 'none'; style-src 'unsafe-inline'"
        return 200, "text/html; charset=utf-8", page.encode(), (("Content-Security-Policy", csp),)
    if path == "/":
        return 302, TEXT, b"see /status\n", (("Location", "/status"),)
    return 404, TEXT, b"not found: /metrics /healthz /config /alerts /status\n", ()


def _encode(response: Response, head_only: bool, keep_alive: bool) -> bytes:
    status, content_type, body, extra = response
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in extra),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


class _AdminProtocol(asyncio.Protocol):
    __deletable__ = ("parser",)  # freed at close (a compiled class must say so)

    def __init__(
        self, ctx: _Context, connections: set[asyncio.Transport], guard: ListenerGuard
    ) -> None:
        self.ctx = ctx
        self.connections = connections
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser  # made once the connection is admitted
        self.clock: ClientClock | None = None
        self.url = b""
        self.size = 0
        self.waiting: list[tuple[str, str, bool]] = []  # (method, path, keep-alive)
        self.paused = False  # the client does not take its answers: they wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has its methods
        self.transport = cast(asyncio.Transport, transport)
        if not self.guard.admit(self.transport):
            return
        self.parser = httptools.HttpRequestParser(self)
        self.clock = ClientClock(asyncio.get_running_loop(), self.guard.limits, self._expired)
        self.connections.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.clock is None:
            return  # never admitted
        self.guard.release()
        self.clock.close()
        del self.parser  # it holds this protocol: free both now
        if self.transport is not None:
            self.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        clock = self.clock
        assert clock is not None
        if clock.phase == IDLE:
            clock.phase, clock.since = HEAD, asyncio.get_running_loop().time()
        self.size += len(data)  # of the request being read (admin requests have no body)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "bad_request", b"no upgrades here\n")
            return
        except httptools.HttpParserError:
            if len(self.url) > self.guard.limits.url_bytes:
                self._refuse(414, "url_bytes", b"uri too long\n")
            else:
                self._refuse(400, "bad_request", b"bad request\n")
            return
        if self.size > self.guard.limits.request_head_bytes:
            self._refuse(431, "request_head_bytes", b"request too large\n")

    def _expired(self, head: bool) -> None:
        transport = self.transport
        if transport is None or aborted_if_stalled(transport, head):
            return
        if head:
            self._refuse(408, "request_head_timeout", b"request timeout\n")
        else:
            transport.close()

    def _refuse(self, status: int, reason: str, body: bytes) -> None:
        self.guard.reject(reason)
        self._reply((status, TEXT, body, ()), False, False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.guard.limits.url_bytes:
            raise httptools.HttpParserError("url too long")

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        keep_alive = bool(self.parser.should_keep_alive())
        try:
            path = httptools.parse_url(self.url).path.decode("latin-1")
        except httptools.HttpParserInvalidURLError:
            self._reply((400, TEXT, b"bad url\n", ()), False, False)
            return
        self.size = 0
        clock = self.clock
        assert clock is not None
        clock.phase, clock.since = IDLE, asyncio.get_running_loop().time()
        if self.paused:
            if len(self.waiting) < MAX_WAITING:
                self.waiting.append((method, path, keep_alive))
            elif self.transport is not None:
                self.transport.abort()
            return
        self._answer(method, path, keep_alive)

    def _answer(self, method: str, path: str, keep_alive: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._reply(handle(self.ctx, method, path), method == "HEAD", keep_alive)

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        while self.waiting and not self.paused:
            self._answer(*self.waiting.pop(0))
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _reply(self, response: Response, head_only: bool, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_encode(response, head_only, keep_alive))
        if not keep_alive:
            self.transport.close()


class AdminServer:
    """A started admin server; ``bound_address`` is what it listens on."""

    def __init__(self, server: asyncio.Server, connections: set[asyncio.Transport]) -> None:
        self._server = server
        self._connections = connections
        # uvloop's ``sockets`` is a list where typeshed says tuple: read it untyped, or the
        # compiled runtime's type check refuses it
        sockets: Sequence[socket.socket] = cast(Any, server).sockets
        host, port = sockets[0].getsockname()[:2]
        self.host: str = host
        self.port: int = port
        self.bound_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def address(self) -> str:
        return self.bound_address

    async def close(self) -> None:
        self._server.close()
        for transport in list(self._connections):
            transport.close()
        await self._server.wait_closed()


async def start_admin(
    host: str,
    port: int,
    *,
    tables_provider: Callable[[], Tables],
    upstreams_provider: Callable[[], SnapshotSource | None],
    metrics: Metrics,
    alerts: AlertEvaluator | None = None,
    limits: Limits = ADMIN_LIMITS,
    runtime: str = "pure",
) -> AdminServer:
    """Listen on ``host:port`` (0: any free port) and serve the admin endpoints."""
    ctx = _Context(tables_provider, upstreams_provider, metrics, alerts, runtime)
    connections: set[asyncio.Transport] = set()
    guard = ListenerGuard(ADMIN_NAME, limits, metrics.inc_rejected, ADMIN_FD_RESERVE)
    metrics.declare_listener(ADMIN_NAME, REASONS)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _AdminProtocol(ctx, connections, guard), host, port, reuse_address=True
    )
    return AdminServer(server, connections)
