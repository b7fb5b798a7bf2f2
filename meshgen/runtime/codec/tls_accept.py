"""A TLS listener's connection from its accept until its handshake is done.

Why not ``create_server(ssl=...)``: asyncio (and uvloop) run the handshake before the
listener's protocol exists, so the listener's ``max_connections`` and descriptor reserve
(:class:`~.guard.ListenerGuard`) only counted finished handshakes, and a flood of unfinished
ones was refused by nothing. HAProxy counts a connection against ``maxconn`` at its accept.

A TLS listener is a plain TCP server whose protocol is :class:`TlsAccept`. At the accept it
admits the connection (or closes it at once and counts why), takes its socket before anything
was read from it, and runs the handshake with ``loop.connect_accepted_socket`` within the
listener's timeout. The listener's own protocol then gets the TLS transport and admits it again
as it would any connection (:meth:`ListenerGuard.hand_over`). A failed, timed-out or abandoned
handshake closes the connection and gives its place back.

Not ``loop.start_tls`` on the accepted transport: uvloop starts reading right after
``connection_made`` (a ``pause_reading`` there does nothing yet), so the client's ClientHello
could reach the plain protocol before the TLS one existed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import cast

from .guard import ListenerGuard

log = logging.getLogger("meshgen.runtime")


class TlsAccept(asyncio.Protocol):
    """One accepted connection of a TLS listener (see the module docstring)."""

    __slots__ = ("_ctx", "_guard", "_inner", "_timeout")

    def __init__(
        self,
        inner: Callable[[], asyncio.Protocol],
        guard: ListenerGuard,
        ctx: ssl.SSLContext,
        timeout: float,
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._ctx = ctx
        self._timeout = timeout

    @staticmethod
    def factory(
        inner: Callable[[], asyncio.Protocol],
        guard: ListenerGuard,
        ctx: ssl.SSLContext,
        timeout: float,
    ) -> Callable[[], TlsAccept]:
        """The protocol factory of a TLS listener whose connections ``inner`` serves."""
        return lambda: TlsAccept(inner, guard, ctx, timeout)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        if not self._guard.admit(transport):
            return  # closed at once and counted
        # The socket outlives this transport: its descriptor is duplicated before the abort,
        # which closes only the original (no FIN, no RST), and before any read.
        fd = os.dup(transport.get_extra_info("socket").fileno())
        transport.abort()
        conn = socket.socket(fileno=fd)
        asyncio.get_running_loop().create_task(self._handshake(conn))

    async def _handshake(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: _HandOver(self._inner(), self._guard),
                conn,
                ssl=self._ctx,
                ssl_handshake_timeout=self._timeout,
            )
        except OSError as exc:  # refused by TLS, timed out, or the peer went away
            log.debug("TLS handshake failed: %s", exc)
            conn.close()
            self._guard.release()
        except BaseException:
            conn.close()
            self._guard.release()
            raise


class _HandOver(asyncio.Protocol):
    """Gives a finished handshake's transport to the listener's protocol, which admits it."""

    __slots__ = ("_guard", "_inner")

    def __init__(self, inner: asyncio.Protocol, guard: ListenerGuard) -> None:
        self._inner = inner
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.hand_over()
        transport.set_protocol(self._inner)
        self._inner.connection_made(transport)
