"""Waiting in tests: :func:`eventually` polls a condition with a deadline, never a fixed sleep.

Why one helper: a sleep long enough for a loaded CI machine slows every run, and one short
enough for a quiet laptop flakes; polling is fast when things are fast and patient when they
are not. A condition is a callable that returns a truthy value when it holds (that value is
returned) or raises ``AssertionError`` while it does not (so a block of asserts can be the
condition). Any other exception ends the wait at once: a process that died is no reason to
keep polling. The failure names what was awaited, the last value or assertion, and whatever
``context()`` adds (a log tail).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")
TIMEOUT = 10.0
INTERVAL = 0.02


def _polls(
    check: Callable[[], T], timeout: float, what: str, context: Callable[[], str] | None
) -> Generator[None, None, T]:
    """Check until the condition holds (returned) or ``timeout`` passes (raised); yields
    whenever the caller should sleep before the next check."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            seen = f"last value: {value!r}"
        except AssertionError as exc:
            value, seen = None, f"last assertion: {exc}"
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or 'a condition'} ({seen}){extra}"
            )
        yield


def eventually(
    check: Callable[[], T],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    what: str = "",
    context: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it holds (module docstring); return its value."""
    polls = _polls(check, timeout, what, context)
    while True:
        try:
            next(polls)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], T],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    what: str = "",
    context: Callable[[], str] | None = None,
) -> T:
    """:func:`eventually` on a running event loop: it sleeps with ``asyncio.sleep``, so the
    loop's other tasks (the servers under test) run between checks."""
    polls = _polls(check, timeout, what, context)
    while True:
        try:
            next(polls)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(interval)
