"""What one listener allows its clients: its limits, its open connections, its refusals.

Theory of operation: each listener (and the admin server) has one :class:`ListenerGuard` for
the life of the process; a reload updates its ``limits`` in place, so connections opened from
then on follow the new tables while open ones keep theirs. A new connection is admitted by
:meth:`ListenerGuard.admit` (a TLS listener's at its accept, before the handshake:
codec/tls_accept.py) or accepted and closed at once (as Envoy's listener connection
limit; HAProxy's ``maxconn`` leaves it in the backlog instead): beyond the listener's
``max_connections``, or when the process is within :data:`PROXY_FD_RESERVE` descriptors of its
``RLIMIT_NOFILE`` (the admin server keeps a smaller reserve, so ``/healthz`` still answers when
the listeners are full). Every refusal is counted in
``meshgen_connections_rejected_total{listener,reason}`` with one of :data:`REASONS`.

The runtime raises its soft ``RLIMIT_NOFILE`` to the hard limit at start
(:func:`raise_fd_limit`), as HAProxy does from its ``maxconn``.

Memory: a closed connection's objects are freed at once (the protocols break their reference
cycles), but glibc keeps the freed heap. After :data:`TRIM_AFTER` connections closed (an idle
flood going away) the heap is handed back with ``malloc_trim(0)`` a second later, at most every
:data:`TRIM_EVERY_S` seconds: measured, 8,000 idle connections took RSS from 46 to 97 MiB, and it
stayed at 84 MiB after they closed, 56 MiB after the trim.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import resource
import time
from collections.abc import Callable
from typing import Final

from ..tables import Limits, Listener
from .timers import TIMER_SLACK

log = logging.getLogger("meshgen.runtime")

REASONS: Final = (
    "max_connections",  # the listener's limits.max_connections reached: accepted and closed
    "fd_limit",  # the process is close to RLIMIT_NOFILE: accepted and closed
    "request_head_timeout",  # the head did not arrive within limits.request_head_timeout: 408
    "request_head_bytes",  # 431
    "request_headers",  # 431
    "url_bytes",  # 414
    "pipelined_requests",  # 429: more than MAX_PIPELINED requests waiting (http1)
    "bad_request",  # not HTTP/1.x, or framing the proxy does not accept: 400, 501, 505
)
TCP_REASONS: Final = (
    "max_connections",
    "fd_limit",
    "no_healthy_endpoint",  # the service (and its backups) had no endpoint to connect to
    "circuit_open",  # circuit_breaker.max_connections of the service reached
    "connect_failure",  # every connect attempt failed or timed out
)
"""The reasons a tcp listener closes a connection without forwarding it (access denials are
``meshgen_denied_total``)."""
SNI_REASONS: Final = (
    *TCP_REASONS,
    # not a TLS ClientHello, one without a server name or above 16 KiB, or a name that no
    # sni pattern matches: nothing to route by
    "sni_no_match",
    "sni_timeout",  # no ClientHello within 5 s of the accept
)


def reasons(listener: Listener) -> tuple[str, ...]:
    """The refusal reasons a listener can count (their series start at 0)."""
    if listener.protocol == "http":
        return REASONS
    return SNI_REASONS if listener.sni else TCP_REASONS


ADMIN_NAME: Final = "_admin"  # its label value; listener names start with a letter
PROXY_FD_RESERVE: Final = (
    128  # descriptors kept free by the listeners: upstream connects, admin, logs
)
ADMIN_FD_RESERVE: Final = 16
ADMIN_LIMITS: Final = Limits(max_connections=256)
TRIM_AFTER: Final = 1024  # closed connections before the heap is trimmed
TRIM_EVERY_S: Final = 10.0


class HeapTrim:
    """``malloc_trim(0)`` after many connections closed (module docstring); a no-op where the C
    library has no ``malloc_trim`` (musl, macOS)."""

    def __init__(self) -> None:
        self.closed = 0
        self.last = 0.0
        self.pending = False
        try:
            self._trim: Callable[[int], int] | None = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            self._trim = None

    def released(self) -> None:
        self.closed += 1
        if self.closed >= TRIM_AFTER and not self.pending and self._trim is not None:
            self.pending = True
            delay = max(1.0, self.last + TRIM_EVERY_S - time.monotonic())
            asyncio.get_running_loop().call_later(delay, self.trim)

    def trim(self) -> None:
        self.pending = False
        self.closed, self.last = 0, time.monotonic()
        if self._trim is not None:
            self._trim(0)


HEAP: Final = HeapTrim()


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %d: %s", target, exc)
    return soft


class ListenerGuard:
    """Admission and refusal counting for one listener (see the module docstring)."""

    __slots__ = ("_count", "fd_ceiling", "limits", "name", "open")

    def __init__(
        self,
        name: str,
        limits: Limits,
        count: Callable[[str, str], None],
        fd_reserve: int = PROXY_FD_RESERVE,
    ) -> None:
        self.name = name
        self.limits = limits
        self.open = 0
        self._count = count
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.fd_ceiling = (1 << 62) if soft == resource.RLIM_INFINITY else soft - fd_reserve

    def admit(self, transport: asyncio.Transport) -> bool:
        """Count a new connection in, or close it at once (and count why); True if admitted."""
        reason = ""
        if self.open >= self.limits.max_connections:
            reason = "max_connections"
        else:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.fileno() >= self.fd_ceiling:
                reason = "fd_limit"
        if reason:
            transport.abort()
            self.reject(reason)
            return False
        self.open += 1
        return True

    def hand_over(self) -> None:
        """An admitted connection passes to a protocol that admits it again: a TLS connection
        whose handshake is done (codec/tls_accept.py)."""
        self.open -= 1

    def release(self) -> None:
        """An admitted connection is gone."""
        self.open -= 1
        HEAP.released()

    def reject(self, reason: str) -> None:
        self._count(self.name, reason)


def aborted_if_stalled(transport: asyncio.Transport, head: bool) -> bool:
    """At a client's deadline (``head``: its request head's): abort the connection if it is
    closing or, past the idle deadline, still holds answers the client has not taken; a close
    would wait for such a client for ever. True if it was aborted."""
    if transport.is_closing() or (not head and transport.get_write_buffer_size()):
        transport.abort()
        return True
    return False


IDLE: Final = 0
HEAD: Final = 1
BUSY: Final = 2
"""Phases of a client connection: waiting for a request (``client_idle_timeout``), receiving a
request head (``request_head_timeout``), a request in flight (the route's timeouts apply)."""


class ClientClock:
    """A client connection's head and idle deadlines with one lazily re-armed loop timer.

    The connection only stores its ``phase`` and, for IDLE and HEAD, the loop time it began
    (``since``): two attribute writes per request, no timer call. The timer checks the phase
    when it fires and re-arms itself at the deadline, but never further than the shortest of
    the two timeouts ahead, so a phase that begins later with a nearer deadline still finds a
    timer that fires in time. ``expired(head)`` is called once when the deadline passes (head:
    in the HEAD phase); :meth:`close` releases the timer and the callback, and with them the
    connection (which holds this clock: a cycle otherwise).
    """

    __slots__ = ("_expired", "_handle", "_head", "_horizon", "_idle", "_loop", "phase", "since")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        expired: Callable[[bool], None],
    ) -> None:
        self._loop = loop
        self._head = limits.request_head_timeout_s
        self._idle = limits.client_idle_timeout_s
        self._horizon = min(self._head, self._idle)
        self._expired = expired
        self.phase = HEAD  # a new connection's first head: from the accept
        self.since = loop.time()
        # the horizon, not the head's deadline: a phase that begins before then (an idle or
        # closed connection) must not wait for the head's deadline to be noticed
        self._handle: asyncio.TimerHandle | None = loop.call_at(
            self.since + self._horizon, self._check
        )

    def _check(self) -> None:
        now = self._loop.time()
        phase = self.phase
        if phase == BUSY:
            due = now + self._horizon
        else:
            due = self.since + (self._head if phase == HEAD else self._idle)
            if now + TIMER_SLACK >= due:
                self._handle = None
                self._expired(phase == HEAD)
                return
        self._handle = self._loop.call_at(min(due, now + self._horizon), self._check)

    def close(self) -> None:
        self._expired = _ignore
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _ignore(head: bool) -> None:
    """The callback of a closed clock."""
