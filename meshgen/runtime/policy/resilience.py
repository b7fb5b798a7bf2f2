"""Resilience decisions: rate limiting, retry eligibility, retry budget, backoff, circuit breaking.

Theory of operation
-------------------
Everything here is a pure decision or a small counter with an injected clock; nothing sleeps
or does I/O. The proxy asks, in order: ``TokenBucket.try_acquire`` (429 + ``Retry-After``),
``CircuitBreaker.admit`` (per try: go, wait in the pending queue, or a fast 503), and after a
failed try ``retryable`` then ``RetryBudget.try_retry`` then waits ``backoff_delay``.

Retry conditions (``RetryPolicy.on``), following Envoy's ``retry_on`` semantics:

==================  ===========================================================================
condition           retries when the outcome is
==================  ===========================================================================
connect-failure     ``"connect-failure"``
reset               ``"reset"`` (connection closed or reset before a complete response)
5xx                 any status 500..599, ``"connect-failure"``, ``"reset"``, ``"timeout"``
gateway-error       status 502, 503, 504, ``"connect-failure"``, ``"timeout"`` (a per-try
                    timeout is a local 504)
retriable-4xx       status 409
refused-stream      ``"refused-stream"`` (an HTTP/2 stream the endpoint refused: never processed)
cancelled ...       a gRPC trailers-only response whose ``grpc-status`` is named so
                    (``policy/grpc.py``: cancelled, deadline-exceeded, internal,
                    resource-exhausted, unavailable)
==================  ===========================================================================

With ``idempotent_only`` only GET HEAD OPTIONS PUT DELETE TRACE are retried (RFC 9110 9.2.2);
it does not apply to gRPC requests (all POST): their ``on`` conditions decide, as in Envoy.

Retry budget (Linkerd): over a sliding window of :data:`BUDGET_WINDOW_S` seconds (ten one-second
buckets) a retry is allowed while ``retries < ratio * requests + min_per_second * window``,
where ``requests`` counts original requests (``record_request``) and ``retries`` counts the
retries already allowed. So after any allowed retry, retries <= the budget.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from ..tables import CircuitBreaker as CircuitBreakerLimits
from ..tables import RetryCondition, RetryPolicy
from .grpc import retry_conditions

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BUDGET_WINDOW_S: Final = 10

Waker = Callable[[bool], bool]
"""Called with True when a queued request gets its slot, False when its deadline passed;
returns False when the waiter is gone (the slot then goes to the next one)."""


class PendingSlot:
    """A request's place in a breaker's pending queue, taken the moment admission says "wait".

    Why not when the driver starts waiting: a driver may go on in a task that runs only after
    the loop pass, and the requests of one pass would all find the queue empty (five at once
    with limits 1/1/1: one tried, four queued instead of one). :meth:`wake` is the queue's
    :data:`Waker`; ``granted`` keeps its answer for a driver that was not waiting yet, and
    ``on_wake`` passes it to one that is."""

    __slots__ = ("granted", "on_wake")

    def __init__(self) -> None:
        self.granted: bool | None = None  # None: still queued
        self.on_wake: Callable[[bool], None] | None = None

    def wake(self, granted: bool) -> bool:
        if self.granted is not None:
            return False
        self.granted = granted
        if self.on_wake is not None:
            self.on_wake(granted)
        return True


_OUTCOME_CONDITIONS: Final[dict[str, frozenset[RetryCondition]]] = {
    "connect-failure": frozenset({"connect-failure", "5xx", "gateway-error"}),
    "reset": frozenset({"reset", "5xx"}),
    "timeout": frozenset({"5xx", "gateway-error"}),
    "refused-stream": frozenset({"refused-stream", "reset", "5xx"}),
}


def status_conditions(status: int) -> frozenset[RetryCondition]:
    """The retry conditions an HTTP status satisfies (see the module table)."""
    conds: set[RetryCondition] = set()
    if 500 <= status <= 599:
        conds.add("5xx")
    if status in (502, 503, 504):
        conds.add("gateway-error")
    if status == 409:
        conds.add("retriable-4xx")
    return frozenset(conds)


def retryable(
    policy: RetryPolicy, method: str, outcome: int | str, grpc: bool = False, grpc_status: int = -1
) -> bool:
    """Whether a failed try with ``outcome`` may be retried under ``policy`` (budget aside).
    ``grpc``: the request is gRPC; ``grpc_status``: a trailers-only response's status."""
    if policy.attempts <= 0:
        return False
    if policy.idempotent_only and not grpc and method.upper() not in IDEMPOTENT_METHODS:
        return False
    if isinstance(outcome, int):
        conds = status_conditions(outcome)
        if grpc_status >= 0:
            conds = conds | retry_conditions(grpc_status)
    else:
        conds = _OUTCOME_CONDITIONS.get(outcome, frozenset())
    return not conds.isdisjoint(policy.on)


def backoff_delay(retry_number: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(max, base * 2**(n-1))]``."""
    ceiling = min(max_s, base_s * (2 ** max(0, retry_number - 1)))
    return rng.uniform(0.0, ceiling)


class TokenBucket:
    """Local rate limit: ``rate`` tokens per second, at most ``burst`` stored; starts full."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def try_acquire(self) -> float | None:
        """Take one token: None when allowed, else the seconds until one is available."""
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        if self.rate <= 0:
            return float("inf")
        return (1.0 - self._tokens) / self.rate


class RetryBudget:
    """Linkerd-style retry budget over a 10 s window of one-second buckets."""

    def __init__(self, ratio: float, min_per_second: float, clock: Callable[[], float]) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self._clock = clock
        self._buckets: list[list[int]] = [[-1, 0, 0] for _ in range(BUDGET_WINDOW_S)]
        self._now = self._buckets[0]  # the bucket of the second last counted in

    def _bucket(self) -> list[int]:
        second = int(self._clock())
        bucket = self._buckets[second % BUDGET_WINDOW_S]
        if bucket[0] != second:
            bucket[0], bucket[1], bucket[2] = second, 0, 0
        return bucket

    def _totals(self) -> tuple[int, int]:
        oldest = int(self._clock()) - BUDGET_WINDOW_S
        live = [b for b in self._buckets if b[0] > oldest]
        return sum(b[1] for b in live), sum(b[2] for b in live)

    def record_request(self, now: float) -> None:
        """Count one original (non-retry) request at clock time ``now`` (the caller's reading
        of this budget's clock: one reading per request; the same second's bucket is kept at
        hand)."""
        second = int(now)
        bucket = self._now
        if bucket[0] == second:
            bucket[1] += 1
            return
        bucket = self._now = self._buckets[second % BUDGET_WINDOW_S]
        if bucket[0] == second:
            bucket[1] += 1
        else:
            bucket[0], bucket[1], bucket[2] = second, 1, 0

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        bucket = self._bucket()
        requests, retries = self._totals()
        if retries < self.ratio * requests + self.min_per_second * BUDGET_WINDOW_S:
            bucket[2] += 1
            return True
        return False


class CircuitBreaker:
    """Envoy-style limits on a service's connections, active requests and pending queue.

    An *active* request holds one upstream connection (HTTP/1.1: one exchange per connection),
    so ``requests`` is also the number of busy connections. ``admit`` decides, as Envoy's
    connection pool does: while every allowed connection is busy (``requests >=
    max_connections``) a request may wait in the FIFO pending queue (``enqueue``) if fewer than
    ``max_pending_requests`` wait already, else it is refused (reason ``pending``); otherwise
    beyond ``max_requests`` it is refused (reason ``requests``). ``release`` hands the slot to
    the oldest live waiter (its ``wake(True)``); waiters whose deadline (``clock`` time) has
    passed are told ``wake(False)`` and skipped. ``try_connection`` caps open sockets (idle
    ones included; the pool closes an idle one to make room). ``is_open`` is True while any
    limit is saturated; ``on_change(is_open)`` is called when that flips.
    """

    def __init__(
        self,
        limits: CircuitBreakerLimits,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.connections = 0
        self.requests = 0
        self.rejected: dict[str, int] = {"connections": 0, "pending": 0, "requests": 0}
        self.expired = 0  # waiters whose deadline passed in the queue
        self._queue: deque[tuple[Waker, float]] = deque()
        self._on_change = on_change
        self._open = False
        self._busy_limit = min(limits.max_connections, limits.max_requests)
        self._no_queue = limits.max_pending_requests <= 0  # an empty queue is full

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def pending(self) -> int:
        """Requests waiting in the queue for a connection."""
        return len(self._queue)

    def _update(self) -> None:
        now_open = (
            self.requests >= self._busy_limit
            or len(self._queue) >= self.limits.max_pending_requests
        )
        if now_open != self._open:
            self._open = now_open
            if self._on_change is not None:
                self._on_change(now_open)

    def admit(self, can_wait: bool = True) -> str | None:
        """None: admitted (call ``release`` later); ``"wait"``: ``enqueue`` and wait; else
        the refusal reason (``pending``, ``requests``, or ``connections`` when the caller
        cannot wait), counted in :attr:`rejected`."""
        if self.requests >= self.limits.max_connections:
            if not can_wait:
                reason = "connections"
            elif len(self._queue) < self.limits.max_pending_requests:
                return "wait"
            else:
                reason = "pending"
        elif self.requests >= self.limits.max_requests:
            reason = "requests"
        else:
            self.requests += 1
            if self.requests >= self._busy_limit:
                self._update()
            return None
        self.rejected[reason] += 1
        return reason

    def enqueue(self, wake: Waker, deadline: float) -> None:
        """Queue a waiter after ``admit`` said ``"wait"``; ``wake(True)`` hands it the slot
        (it must ``release`` later); ``wake`` returns False when the waiter is gone."""
        self._queue.append((wake, deadline))
        self._update()

    def cancel(self, wake: Waker) -> bool:
        """Take a waiter out of the queue (it timed out); False if it is no longer queued."""
        for i, (w, _) in enumerate(self._queue):
            if w == wake:  # (==: a bound method is a new object at each access)
                del self._queue[i]
                self._update()
                return True
        return False

    def release(self) -> None:
        """An active request ended: its slot passes to the oldest live waiter, or is freed."""
        queue = self._queue
        while queue:
            wake, deadline = queue.popleft()
            if deadline <= self.clock():
                self.expired += 1
                wake(False)
            elif wake(True):
                self._update()
                return
        if self.requests > 0:
            self.requests -= 1
        # ``_update`` with the queue empty, inlined: once per request.
        if (self.requests >= self._busy_limit or self._no_queue) != self._open:
            self._update()

    def try_connection(self) -> bool:
        if self.connections >= self.limits.max_connections:
            self.rejected["connections"] += 1
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        self.connections = max(0, self.connections - 1)
