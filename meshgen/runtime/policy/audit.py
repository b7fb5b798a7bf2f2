"""Log lines for requests an ``access: audit`` listener forwards although the rules deny them.

An audit listener is a dry run of its access rules: a request the rules would answer with 403
is forwarded, counted in ``meshgen_denied_total{mode="audit"}`` and logged here with the
listener, the caller, method, path, route and the service whose rules deny it. The lines are
rate limited (a token bucket of ``rate`` per second, ``burst`` at once) so a flood of denied
requests can neither fill a disk nor stall the event loop on a slow stderr: lines beyond the
limit are counted and the next line says how many were left out; the metric counts them all.
Values a client chose (path, caller name) are written with ``repr``, so they cannot forge lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .resilience import TokenBucket


class AuditLog:
    """Rate-limited warnings about requests an audit listener let through."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        rate: float = 10.0,
        burst: int = 20,
    ) -> None:
        self.logger = logger
        self.bucket = TokenBucket(rate, burst, clock)
        self.suppressed = 0

    def denied(
        self, listener: str, caller: str | None, method: str, path: str, route: str, service: str
    ) -> None:
        """Log one request the rules deny that ``listener`` forwarded (audit mode)."""
        what = f"{method} {path!r}"
        self._log(listener, what, caller, f" on route {route}", service)

    def connection_denied(self, listener: str, caller: str | None, service: str) -> None:
        """Log one connection the rules deny that tcp ``listener`` forwarded (audit mode)."""
        self._log(listener, "a connection", caller, "", service)

    def _log(self, listener: str, what: str, caller: str | None, where: str, service: str) -> None:
        if self.bucket.try_acquire() is not None:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more not logged)" if self.suppressed else ""
        self.suppressed = 0
        who = "a caller without a certificate" if caller is None else f"caller {caller!r}"
        self.logger.warning(
            "access audit: listener %s forwarded %s from %s%s; verdict: deny "
            "(no access rule lets it call service %s)%s",
            listener,
            what,
            who,
            where,
            service,
            more,
        )
