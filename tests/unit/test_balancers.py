"""Unit tests for the runtime's balancers: every policy, the hash, and request hash keys."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from meshgen.runtime.tables import Endpoint, LoadBalancer
from meshgen.runtime.upstream.balancers import (
    MAGLEV_TABLE_SIZE,
    RING_MIN_SIZE,
    SCHEDULE_LIMIT,
    LeastRequest,
    Maglev,
    RingHash,
    RoundRobin,
    WeightedRandom,
    edf_schedule,
    hash64,
    maglev_table,
    make_balancer,
    request_hash_key,
)


def eps(*weights: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint("10.0.0.1", 8000 + i, weight=w) for i, w in enumerate(weights))


def test_hash64_is_blake2b_64_little_endian() -> None:
    """The documented key hash is stable: BLAKE2b, 8-byte digest, little-endian."""
    expected = int.from_bytes(hashlib.blake2b(b"user-1", digest_size=8).digest(), "little")
    assert hash64(b"user-1") == expected
    assert hash64(b"user-1") != hash64(b"user-2")


def test_edf_schedule_cycle_has_each_index_weight_times_and_is_smooth() -> None:
    """One cycle of EDF holds index i exactly w_i times, interleaved (5,1,1 -> no long runs)."""
    order = edf_schedule([5, 1, 1], 7)
    assert Counter(order) == {0: 5, 1: 1, 2: 1}
    assert order == [0, 0, 0, 1, 2, 0, 0]


def test_round_robin_equal_weights_visits_everyone_in_turn() -> None:
    """Equal weights: every window of n picks holds each endpoint once."""
    endpoints = eps(1, 1, 1, 1)
    rr = RoundRobin(endpoints, random.Random(3))
    picks = [rr.pick(None) for _ in range(12)]
    for i in range(0, 12, 4):
        assert set(picks[i : i + 4]) == set(endpoints)


def test_round_robin_weighted_exact_over_a_cycle() -> None:
    """Weights 3:2:1 (gcd-reduced from 6:4:2) give exactly 3:2:1 in each cycle of 6."""
    endpoints = eps(6, 4, 2)
    rr = RoundRobin(endpoints, random.Random(0))
    counts = Counter(rr.pick(None).port for _ in range(600))
    assert counts == {8000: 300, 8001: 200, 8002: 100}


def test_round_robin_heap_path_for_huge_weights() -> None:
    """Total weight above SCHEDULE_LIMIT uses the live EDF heap and still honours weights."""
    endpoints = eps(SCHEDULE_LIMIT, SCHEDULE_LIMIT - 1, 1)
    rr = RoundRobin(endpoints, random.Random(0))
    assert rr._heap, "expected the heap path"
    counts = Counter(rr.pick(None).port for _ in range(2 * SCHEDULE_LIMIT))
    assert abs(counts[8000] - SCHEDULE_LIMIT) <= 2
    assert abs(counts[8001] - (SCHEDULE_LIMIT - 1)) <= 2
    assert 0 <= counts[8002] <= 3


def test_weighted_random_follows_weights() -> None:
    """Weighted random: shares within 4 sigma of 1:3 over 8000 seeded draws."""
    wr = WeightedRandom(eps(1, 3), random.Random(7))
    n = 8000
    hits = sum(1 for _ in range(n) if wr.pick(None).port == 8001)
    sigma = (n * 0.75 * 0.25) ** 0.5
    assert abs(hits - 0.75 * n) < 4 * sigma


def test_least_request_prefers_the_idle_endpoint() -> None:
    """With one busy endpoint of two, P2C picks the idle one ~3/4 of the time (both draws)."""
    endpoints = eps(1, 1)
    in_flight = {endpoints[0].address: 5}
    lr = LeastRequest(endpoints, random.Random(1), in_flight, choice_count=2)
    n = 4000
    idle = sum(1 for _ in range(n) if lr.pick(None) == endpoints[1])
    assert idle > 0.7 * n


def test_least_request_choice_count_n_is_deterministic_least() -> None:
    """Many choices over two endpoints always find the idle one."""
    endpoints = eps(1, 1)
    lr = LeastRequest(endpoints, random.Random(1), {endpoints[1].address: 1}, choice_count=50)
    assert all(lr.pick(None) == endpoints[0] for _ in range(100))


def test_least_request_weighting_scores_in_flight_per_weight() -> None:
    """Heavier endpoint with equal in-flight count wins a two-way comparison."""
    endpoints = eps(1, 4)
    in_flight = {e.address: 3 for e in endpoints}
    lr = LeastRequest(endpoints, random.Random(1), in_flight, choice_count=8)
    assert Counter(lr.pick(None) for _ in range(200))[endpoints[1]] >= 195


def test_ring_hash_is_sticky_and_large_enough() -> None:
    """Same key, same endpoint; the ring has at least 1024 points; no key -> random spread."""
    endpoints = eps(1, 1, 1)
    ring = RingHash(endpoints, random.Random(0))
    assert len(ring._hashes) >= RING_MIN_SIZE
    assert len({ring.pick(b"user-42") for _ in range(50)}) == 1
    assert len({ring.pick(None) for _ in range(100)}) == 3
    keyed = Counter(ring.pick(f"k{i}".encode()) for i in range(3000))
    assert min(keyed.values()) > 700


def test_maglev_table_is_full_and_weighted() -> None:
    """Every slot is owned; shares follow weights 1:2 within 1 %."""
    table = maglev_table([b"a:1", b"b:1"], [1, 2], MAGLEV_TABLE_SIZE)
    assert min(table) == 0 and len(table) == MAGLEV_TABLE_SIZE
    share = table.count(1) / MAGLEV_TABLE_SIZE
    assert abs(share - 2 / 3) < 0.01


def test_maglev_is_sticky_and_keyless_is_random() -> None:
    """A key always lands on the same endpoint; None spreads over all."""
    endpoints = eps(1, 1, 1)
    mg = Maglev(endpoints, random.Random(0))
    assert len({mg.pick(b"session-9") for _ in range(20)}) == 1
    assert len({mg.pick(None) for _ in range(100)}) == 3


def test_make_balancer_builds_each_policy_and_rejects_empty() -> None:
    """Every policy name maps to its class; an empty set is a programming error."""
    endpoints = eps(1, 2)
    for policy, cls in [
        ("round_robin", RoundRobin),
        ("random", WeightedRandom),
        ("least_request", LeastRequest),
        ("ring_hash", RingHash),
        ("maglev", Maglev),
    ]:
        b = make_balancer(LoadBalancer(policy=policy), endpoints, random.Random(0), {})  # type: ignore[arg-type]
        assert isinstance(b, cls)
        assert b.pick(b"k") in endpoints
    with pytest.raises(ValueError):
        make_balancer(LoadBalancer(), (), random.Random(0), {})


def _headers(values: dict[str, str]):  # type: ignore[no-untyped-def]
    return values.get


def test_request_hash_key_from_header_cookie_and_source_ip() -> None:
    """Keys come from the configured place; missing ones are None (random fallback)."""
    by_header = LoadBalancer(policy="ring_hash", hash_header="x-user")
    assert request_hash_key(by_header, _headers({"x-user": "jason"}), "1.2.3.4") == b"jason"
    assert request_hash_key(by_header, _headers({}), "1.2.3.4") is None
    by_cookie = LoadBalancer(policy="maglev", hash_cookie="sid")
    cookie = {"cookie": "a=1; sid=abc123; b=2"}
    assert request_hash_key(by_cookie, _headers(cookie), "") == b"abc123"
    assert request_hash_key(by_cookie, _headers({"cookie": "a=1"}), "") is None
    assert request_hash_key(by_cookie, _headers({}), "") is None
    by_ip = LoadBalancer(policy="maglev", hash_source_ip=True)
    assert request_hash_key(by_ip, _headers({}), "10.1.2.3") == b"10.1.2.3"


def test_request_hash_key_is_none_for_non_hash_policies() -> None:
    """round_robin never needs a key, even if hash_on were set."""
    lb = LoadBalancer(policy="round_robin", hash_header="x-user")
    assert request_hash_key(lb, _headers({"x-user": "u"}), "1.1.1.1") is None
