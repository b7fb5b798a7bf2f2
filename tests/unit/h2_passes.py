"""How many DATA frames the runtime's HTTP/2 connections work through in each pass of the
event loop: a count, not a time, for the tests that a peer's one-byte frames do not hold
the loop (``h2lib.FRAMES_PER_PASS``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from meshgen.runtime.codec import h2lib


@contextmanager
def data_frames_per_pass() -> Iterator[Counter[int]]:
    """While the block runs, count the DATA frames (``DataReceived`` events) that
    :func:`h2lib.receive` hands the runtime's connections in each pass of the running loop
    (the tests' own peers use ``h2`` directly): pass number -> frames. A callback that
    schedules itself again with ``call_soon`` runs once a pass and numbers the passes."""
    loop = asyncio.get_running_loop()
    per_pass: Counter[int] = Counter()
    passes = [0]
    real = h2lib.receive

    def receive(*args: Any) -> tuple[list[h2lib.events.Event], bytes]:
        events, rest = real(*args)
        per_pass[passes[0]] += sum(isinstance(e, h2lib.events.DataReceived) for e in events)
        return events, rest

    def tick() -> None:
        passes[0] += 1
        ticker[0] = loop.call_soon(tick)

    ticker = [loop.call_soon(tick)]
    h2lib.receive = receive  # type: ignore[assignment]
    try:
        yield per_pass
    finally:
        h2lib.receive = real
        ticker[0].cancel()
