"""One long-lived loop timer for a deadline that moves on every request.

Why: a connection's deadline changes several times per request (the try's timeout, the client's
head and idle timeouts); creating and cancelling a loop timer each time costs more than the
request's routing. A :class:`LazyTimer` keeps one handle: moving the deadline later only stores
a number, and when the handle fires early it re-arms itself at the current deadline; only a
deadline *earlier* than the armed one replaces the handle. ``due = 0.0`` switches it off
without touching the loop.

:meth:`LazyTimer.close` drops the handle and the callback, both of which hold the owner (which
holds the timer: a cycle): an owner that closes its timer when its connection is lost is freed
at once, not when the timer fires or the cyclic garbage collector runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

# Timers fire up to a millisecond early (uvloop's clock resolution); treat that as on time.
TIMER_SLACK: Final = 0.002


class LazyTimer:
    """Calls ``fire`` once ``loop.time()`` reaches ``due`` (0.0: off)."""

    __slots__ = ("_at", "_fire", "_handle", "_loop", "due")

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the handle fires
        self.due = 0.0

    def set(self, due: float) -> None:
        """Fire at loop time ``due`` (replacing any earlier setting)."""
        self.due = due
        handle = self._handle
        if handle is None or self._at > due:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(due, self._expire)
            self._at = due

    def close(self) -> None:
        """Off for good: the handle and the callback (and through them the owner) are released."""
        self.due = 0.0
        self._fire = _never
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        due = self.due
        if due == 0.0:
            return
        if self._loop.time() + TIMER_SLACK >= due:
            self.due = 0.0
            self._fire()
        else:
            self._handle = self._loop.call_at(due, self._expire)
            self._at = due


def _never() -> None:
    """The callback of a closed timer."""
