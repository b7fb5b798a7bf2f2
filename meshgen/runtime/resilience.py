"""Resilience decisions: rate limiting, retry eligibility, retry budget, backoff, circuit breaking.

Theory of operation
-------------------
Everything here is a pure decision or a small counter with an injected clock; nothing sleeps
or does I/O. The proxy asks, in order: ``TokenBucket.try_acquire`` (429 + ``Retry-After``),
``CircuitBreaker.try_request`` (503 fast), and after a failed try ``retryable`` then
``RetryBudget.try_retry`` then waits ``backoff_delay`` before the next try.

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
==================  ===========================================================================

With ``idempotent_only`` only GET HEAD OPTIONS PUT DELETE TRACE are retried (RFC 9110 9.2.2).

Retry budget (Linkerd): over a sliding window of :data:`BUDGET_WINDOW_S` seconds (ten one-second
buckets) a retry is allowed while ``retries < ratio * requests + min_per_second * window``,
where ``requests`` counts original requests (``record_request``) and ``retries`` counts the
retries already allowed. So after any allowed retry, retries <= the budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from .tables import CircuitBreaker as CircuitBreakerLimits
from .tables import RetryCondition, RetryPolicy

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BUDGET_WINDOW_S: Final = 10

_OUTCOME_CONDITIONS: Final[dict[str, frozenset[RetryCondition]]] = {
    "connect-failure": frozenset({"connect-failure", "5xx", "gateway-error"}),
    "reset": frozenset({"reset", "5xx"}),
    "timeout": frozenset({"5xx", "gateway-error"}),
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


def retryable(policy: RetryPolicy, method: str, outcome: int | str) -> bool:
    """Whether a failed try with ``outcome`` may be retried under ``policy`` (budget aside)."""
    if policy.attempts <= 0:
        return False
    if policy.idempotent_only and method.upper() not in IDEMPOTENT_METHODS:
        return False
    if isinstance(outcome, int):
        conds = status_conditions(outcome)
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

    def record_request(self) -> None:
        """Count one original (non-retry) request."""
        self._bucket()[1] += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows it."""
        bucket = self._bucket()
        requests, retries = self._totals()
        if retries < self.ratio * requests + self.min_per_second * BUDGET_WINDOW_S:
            bucket[2] += 1
            return True
        return False


class CircuitBreaker:
    """Envoy-style limits on concurrent connections, pending and active requests of a service.

    Each ``try_*`` claims one unit (False when the limit is reached: answer 503 fast) and must be
    paired with ``release_*``. ``is_open`` is True while any counter sits at its limit;
    ``on_change(is_open)`` is called when that flips (e.g. ``Metrics.set_circuit_open``).
    """

    def __init__(
        self,
        limits: CircuitBreakerLimits,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.limits = limits
        self.connections = 0
        self.pending = 0
        self.requests = 0
        self.rejected: dict[str, int] = {"connections": 0, "pending": 0, "requests": 0}
        self._on_change = on_change
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    def _update(self) -> None:
        now_open = (
            self.connections >= self.limits.max_connections
            or self.pending >= self.limits.max_pending_requests
            or self.requests >= self.limits.max_requests
        )
        if now_open != self._open:
            self._open = now_open
            if self._on_change is not None:
                self._on_change(now_open)

    def try_request(self) -> bool:
        if self.requests >= self.limits.max_requests:
            self.rejected["requests"] += 1
            return False
        self.requests += 1
        self._update()
        return True

    def release_request(self) -> None:
        self.requests = max(0, self.requests - 1)
        self._update()

    def try_pending(self) -> bool:
        if self.pending >= self.limits.max_pending_requests:
            self.rejected["pending"] += 1
            return False
        self.pending += 1
        self._update()
        return True

    def release_pending(self) -> None:
        self.pending = max(0, self.pending - 1)
        self._update()

    def try_connection(self) -> bool:
        if self.connections >= self.limits.max_connections:
            self.rejected["connections"] += 1
            return False
        self.connections += 1
        self._update()
        return True

    def release_connection(self) -> None:
        self.connections = max(0, self.connections - 1)
        self._update()
