"""Unit tests for meshgen.runtime.policy.resilience with an injected clock (nothing sleeps)."""

from __future__ import annotations

import random

import pytest

from meshgen.runtime.forward.generation import retry_budgets
from meshgen.runtime.policy.resilience import (
    CircuitBreaker,
    RetryBudget,
    TokenBucket,
    backoff_delay,
    retryable,
)
from meshgen.runtime.tables import CircuitBreaker as Limits
from meshgen.runtime.tables import Match, RetryPolicy, Route, Tables, Target
from tests.unit.tables_factory import make_tables


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_then_says_when_to_retry() -> None:
    """A full bucket allows `burst` requests; the next gets Retry-After = time to one token."""
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [None, None, None]
    wait = bucket.try_acquire()
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.try_acquire() is None
    clock.now += 100
    assert [bucket.try_acquire() for _ in range(4)][-1] == pytest.approx(0.1)


def test_retry_budget_floor_is_min_per_second_times_window() -> None:
    """With no traffic, min_per_second x 10 s retries are allowed, then none."""
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1, clock=clock)
    assert sum(budget.try_retry() for _ in range(15)) == 10


def test_retry_budget_grows_with_requests_and_expires_with_the_window() -> None:
    """ratio x requests adds to the budget; after 10 s old requests and retries are forgotten."""
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=0, clock=clock)
    for _ in range(50):
        budget.record_request(clock.now)
    assert sum(budget.try_retry() for _ in range(20)) == 10
    clock.now += 5
    assert not budget.try_retry()
    clock.now += 5.5
    assert not budget.try_retry()  # the requests that funded retries are gone too
    for _ in range(5):
        budget.record_request(clock.now)
    assert budget.try_retry() and not budget.try_retry()


def test_backoff_full_jitter_bounds() -> None:
    """Delay n is uniform in [0, min(max, base * 2**(n-1))]."""
    rng = random.Random(1)
    for n, cap in [(1, 0.025), (2, 0.05), (3, 0.1), (6, 0.25), (30, 0.25)]:
        delays = [backoff_delay(n, 0.025, 0.25, rng) for _ in range(300)]
        assert min(delays) >= 0 and max(delays) <= cap
        assert max(delays) > 0.8 * cap


ALL = ("connect-failure", "reset", "5xx", "gateway-error", "retriable-4xx")


@pytest.mark.parametrize(
    ("on", "method", "outcome", "expected"),
    [
        (("5xx",), "GET", 500, True),
        (("5xx",), "GET", 404, False),
        (("5xx",), "GET", "reset", True),
        (("5xx",), "GET", "connect-failure", True),
        (("5xx",), "GET", "timeout", True),
        (("gateway-error",), "GET", 500, False),
        (("gateway-error",), "GET", 503, True),
        (("gateway-error",), "GET", "timeout", True),
        (("gateway-error",), "GET", "reset", False),
        (("connect-failure",), "GET", "connect-failure", True),
        (("connect-failure",), "GET", 503, False),
        (("reset",), "GET", "reset", True),
        (("retriable-4xx",), "GET", 409, True),
        (("retriable-4xx",), "GET", 429, False),
        (ALL, "POST", 503, False),
        (ALL, "PATCH", "connect-failure", False),
        (ALL, "put", 503, True),
        (ALL, "GET", 200, False),
    ],
)
def test_retryable_table(
    on: tuple[str, ...], method: str, outcome: int | str, expected: bool
) -> None:
    """`on` conditions and idempotent_only decide retry eligibility as the module table says."""
    policy = RetryPolicy(attempts=2, per_try_timeout_s=1.0, on=on)  # type: ignore[arg-type]
    assert retryable(policy, method, outcome) is expected


def test_retryable_non_idempotent_allowed_when_configured() -> None:
    """idempotent_only=false lets POST retry; attempts=0 never retries."""
    policy = RetryPolicy(attempts=1, per_try_timeout_s=1.0, idempotent_only=False)
    assert retryable(policy, "POST", 502)
    assert not retryable(RetryPolicy(attempts=0, per_try_timeout_s=1.0), "GET", 502)


def test_circuit_breaker_requests_limit_and_open_state() -> None:
    """Beyond max_requests (connections to spare) a request is refused with a counted reason;
    is_open flips while the limit is reached and reports each change."""
    changes: list[bool] = []
    cb = CircuitBreaker(
        Limits(max_connections=5, max_pending_requests=1, max_requests=2), on_change=changes.append
    )
    assert cb.admit() is None and not cb.is_open
    assert cb.admit() is None and cb.is_open
    assert cb.admit() == "requests"
    assert cb.rejected["requests"] == 1
    cb.release()
    assert not cb.is_open
    assert changes == [True, False]


class Waiter:
    """A queued request: records what the breaker told it; ``gone`` ones refuse the slot."""

    def __init__(self, log: list[tuple[str, bool]], name: str, gone: bool = False) -> None:
        self.log, self.name, self.gone = log, name, gone

    def __call__(self, granted: bool) -> bool:
        if self.gone:
            return False
        self.log.append((self.name, granted))
        return True


def test_circuit_breaker_pending_queue_is_fifo_and_bounded() -> None:
    """1 connection, 1 pending: the 2nd request waits, the 3rd and 4th are refused; the busy
    slot passes to the waiter when the 1st ends (Envoy's max_pending_requests)."""
    clock = Clock()
    changes: list[bool] = []
    cb = CircuitBreaker(
        Limits(max_connections=1, max_pending_requests=1, max_requests=1), changes.append, clock
    )
    log: list[tuple[str, bool]] = []
    assert cb.admit() is None and cb.is_open
    assert cb.admit() == "wait"
    cb.enqueue(Waiter(log, "b"), clock.now + 5)
    assert cb.pending == 1
    assert cb.admit() == "pending" and cb.admit() == "pending"
    assert cb.rejected == {"connections": 0, "pending": 2, "requests": 0}
    clock.now += 0.3
    cb.release()  # a's slot goes to b: still one active request
    assert log == [("b", True)] and cb.requests == 1 and cb.pending == 0 and cb.is_open
    cb.release()
    assert cb.requests == 0 and not cb.is_open
    assert changes == [True, False]


def test_circuit_breaker_queue_order_expiry_and_cancel() -> None:
    """Waiters are served oldest first; expired ones are told False and skipped, gone ones
    are skipped, cancelled ones leave the queue."""
    clock = Clock()
    cb = CircuitBreaker(
        Limits(max_connections=1, max_pending_requests=4, max_requests=9), None, clock
    )
    log: list[tuple[str, bool]] = []
    assert cb.admit() is None
    late, gone, cancelled = Waiter(log, "late"), Waiter(log, "gone", gone=True), Waiter(log, "c")
    for w, deadline in ((late, 1), (gone, 10), (cancelled, 10), (Waiter(log, "d"), 10)):
        assert cb.admit() == "wait"
        cb.enqueue(w, clock.now + deadline)
    assert cb.cancel(cancelled) and not cb.cancel(cancelled)
    clock.now += 2  # past late's deadline
    cb.release()
    assert log == [("late", False), ("d", True)]
    assert cb.expired == 1 and cb.pending == 0 and cb.requests == 1
    cb.release()
    assert cb.requests == 0


def test_circuit_breaker_no_wait_and_connection_cap() -> None:
    """Callers that cannot wait are refused when every connection is busy; sockets are capped
    separately and do not hold the circuit open."""
    cb = CircuitBreaker(Limits(max_connections=1, max_pending_requests=1, max_requests=1))
    assert cb.admit(can_wait=False) is None
    assert cb.admit(can_wait=False) == "connections"
    assert cb.rejected["connections"] == 1
    cb.release()
    assert cb.try_connection() and not cb.try_connection()
    assert not cb.is_open  # an idle socket at the cap refuses nothing
    cb.release_connection()
    assert cb.try_connection()


def test_retry_budgets_pool_per_service_and_per_route_that_sets_its_own() -> None:
    """Routes without their own budget share the service's pool; a route with its own gets a
    pool of its own per destination service, in whatever order the routes come."""
    base = make_tables()
    own = RetryPolicy(attempts=1, per_try_timeout_s=1.0, budget_min_per_second=1.0,
                      budget_route="tight")  # fmt: skip
    shared = RetryPolicy(attempts=1, per_try_timeout_s=1.0)

    def route(name: str, policy: RetryPolicy, services: tuple[str, ...]) -> Route:
        to = tuple(Target(s, None, 100 // len(services), 1.0, 1.0, policy) for s in services)
        return Route(name=name, match=Match(path=f"/{name}"), to=to)

    for order in (1, -1):
        routes = (route("tight", own, ("a", "b")), route("loose", shared, ("a",)),
                  route("other", shared, ("a", "b")))[::order]  # fmt: skip
        tables = Tables(mesh=base.mesh, clusters=base.clusters, routes=routes,
                        listeners=base.listeners)  # fmt: skip
        budgets = retry_budgets(tables, lambda: 0.0)
        by = {(r.name, t.service): budgets[id(t)] for r in routes for t in r.to}
        assert by[("loose", "a")] is by[("other", "a")]
        assert by[("other", "b")] is not by[("other", "a")]
        assert by[("tight", "a")] not in (by[("loose", "a")], by[("tight", "b")])
        assert by[("tight", "a")].min_per_second == 1.0 and by[("loose", "a")].min_per_second == 10
