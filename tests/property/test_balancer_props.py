"""Property tests: balancer fairness, consistent-hash stability, P2C preference, health flips."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.runtime.tables import Endpoint, HealthCheck
from meshgen.runtime.upstream.balancers import (
    LeastRequest,
    Maglev,
    RingHash,
    RoundRobin,
    WeightedRandom,
)
from meshgen.runtime.upstream.health import HealthState

weights_st = st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=8)


def endpoints(weights: list[int]) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.1.0.{i + 1}", 8080, weight=w) for i, w in enumerate(weights))


@settings(deadline=None, max_examples=60)
@given(weights=weights_st, seed=st.integers(0, 2**32 - 1), cycles=st.integers(1, 3))
def test_round_robin_is_exactly_weighted_over_whole_cycles(
    weights: list[int], seed: int, cycles: int
) -> None:
    """Any k whole cycles of round robin give every endpoint exactly k x its (reduced) share."""
    eps = endpoints(weights)
    rr = RoundRobin(eps, random.Random(seed))
    total = sum(weights)
    counts = Counter(rr.pick(None) for _ in range(cycles * total))
    for e in eps:
        assert counts[e] == cycles * e.weight


@settings(deadline=None, max_examples=30)
@given(weights=weights_st, seed=st.integers(0, 2**32 - 1))
def test_weighted_random_converges_to_weights(weights: list[int], seed: int) -> None:
    """Each endpoint's share is within 4 sigma of weight / total over 4000 draws."""
    eps = endpoints(weights)
    wr = WeightedRandom(eps, random.Random(seed))
    n = 4000
    counts = Counter(wr.pick(None) for _ in range(n))
    total = sum(weights)
    for e in eps:
        p = e.weight / total
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(counts[e] - n * p) <= 4 * sigma + 1


KEYS = [f"user-{i}".encode() for i in range(1500)]


@settings(deadline=None, max_examples=25)
@given(n=st.integers(2, 12), data=st.data())
def test_ring_hash_moves_only_the_keys_of_the_endpoint_that_left(
    n: int, data: st.DataObject
) -> None:
    """An endpoint leaving the healthy set moves exactly its keys (about 1/N) and no other."""
    eps = endpoints([1] * n)
    gone = eps[data.draw(st.integers(0, n - 1))]
    before = RingHash(eps, random.Random(0))
    after = RingHash(tuple(e for e in eps if e != gone), random.Random(0), group_weight=n)
    moved = [k for k in KEYS if before.pick(k) != after.pick(k)]
    assert all(before.pick(k) == gone for k in moved)
    assert len(moved) / len(KEYS) <= 1.3 / n + 0.02


@settings(deadline=None, max_examples=12)
@given(n=st.integers(2, 12), data=st.data())
def test_maglev_moves_about_one_nth_of_keys(n: int, data: st.DataObject) -> None:
    """Removing one of N endpoints moves the removed one's keys plus only a small extra share."""
    eps = endpoints([1] * n)
    gone = eps[data.draw(st.integers(0, n - 1))]
    before = Maglev(eps, random.Random(0))
    after = Maglev(tuple(e for e in eps if e != gone), random.Random(0))
    moved = [k for k in KEYS if before.pick(k) != after.pick(k)]
    assert len(moved) / len(KEYS) <= 1 / n + 0.06


@settings(deadline=None, max_examples=40)
@given(
    busy=st.lists(st.integers(1, 50), min_size=1, max_size=7),
    idle=st.integers(1, 7),
    seed=st.integers(0, 2**32 - 1),
)
def test_least_request_prefers_idle_endpoints(busy: list[int], idle: int, seed: int) -> None:
    """With P2C a busy endpoint wins only if both draws are busy: share <= (b/n)^2 + 4 sigma."""
    eps = endpoints([1] * (len(busy) + idle))
    in_flight = {e.address: c for e, c in zip(eps, busy, strict=False)}
    lr = LeastRequest(eps, random.Random(seed), in_flight, choice_count=2)
    n = 2000
    busy_picks = sum(1 for _ in range(n) if lr.pick(None).address in in_flight)
    p = (len(busy) / len(eps)) ** 2
    assert busy_picks <= n * p + 4 * (n * p * (1 - p)) ** 0.5 + 1


@settings(deadline=None, max_examples=100)
@given(
    results=st.lists(st.booleans(), max_size=40),
    up=st.integers(1, 5),
    down=st.integers(1, 5),
)
def test_health_flips_only_after_threshold_runs(results: list[bool], up: int, down: int) -> None:
    """The state equals a reference: it flips when the trailing run reaches the threshold."""
    state = HealthState(HealthCheck(kind="tcp", healthy_threshold=up, unhealthy_threshold=down))
    healthy, run = True, 0
    for ok in results:
        run = 0 if ok == healthy else run + 1
        if run >= (up if ok else down):
            healthy, run = not healthy, 0
        state.on_result(ok)
        assert state.healthy is healthy
