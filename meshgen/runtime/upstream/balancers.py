"""Load balancers: pure pickers over one fixed, non-empty endpoint set.

Theory of operation
-------------------
A balancer is built once for a given tuple of eligible endpoints (after health, outlier
ejection, subset and failover filtering) and then answers ``pick(key)`` many times. The caller
(:mod:`.upstreams`) caches balancers by that tuple, so a balancer is rebuilt only when the
eligible set changes, never per pick. Every pick is O(1) or O(log n); all O(n) or larger work
happens in ``__init__``. Balancers never do I/O and never read the clock; randomness comes from
an injected :class:`random.Random`, so tests are deterministic.

Policies (``LoadBalancer.policy``):

``round_robin``
    Smooth weighted round robin computed by an earliest-deadline-first (EDF) scheduler, as
    Envoy does: endpoint *i* is due every ``1/w_i`` virtual time units, first at ``0.5/w_i``,
    ties broken by position. When the total (gcd-reduced) weight is at most
    :data:`SCHEDULE_LIMIT` the whole cycle is precomputed and a pick is a list index; beyond
    that the heap is advanced at pick time (O(log n)). The cycle starts at a random offset so
    that rebuilt balancers in many processes do not all hit the first endpoint.
``random``
    Weighted: bisect a uniform draw over cumulative weights (plain ``choice`` when equal).
``least_request``
    Power of ``choice_count`` choices over the shared in-flight counter (keyed by address, owned
    by the caller, so it survives rebuilds). Candidates are drawn in proportion to weight and the
    lowest ``(in_flight + 1) / weight`` wins, which is Envoy's scoring with
    ``active_request_bias = 1``; with equal weights this is plain P2C on in-flight counts.
``ring_hash``
    Ketama-style ring. Each endpoint gets ``weight x K`` points, where
    ``K = ceil(RING_TARGET_SIZE / group weight)`` and the group weight is the total weight of
    the whole endpoint group *before* health filtering (the caller passes it; it defaults to
    this set's weight). So when every endpoint is in, the ring holds at least
    :data:`RING_TARGET_SIZE` (4096 >= 1024) points, and when endpoints leave for health reasons
    the survivors keep exactly their points: only the departed endpoints' keys move. The ring
    never exceeds :data:`RING_MAX_SIZE` points. The hash is BLAKE2b with an 8-byte digest,
    read little-endian as an unsigned 64-bit integer (:func:`hash64`), for ring points
    (``b"<address>_<i>"``) and request keys alike: stdlib, stable across processes and
    platforms (unlike ``hash()``), well mixed. A key maps to the first point clockwise.
``maglev``
    Maglev lookup table of :data:`MAGLEV_TABLE_SIZE` (prime) entries, weighted the way Envoy
    does (an endpoint takes a turn in a round only when its weight share allows); offset and
    skip come from :func:`hash64` of the address with two different salts. A pick is one index.

A hash policy given ``key is None`` (header, cookie or source IP absent) picks at random,
weighted. :func:`request_hash_key` extracts the key from a request.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from hashlib import blake2b
from http.cookies import CookieError, SimpleCookie
from typing import Final

from ..tables import Endpoint, LoadBalancer

SCHEDULE_LIMIT: Final = 4096
RING_MIN_SIZE: Final = 1024
RING_TARGET_SIZE: Final = 4096
RING_MAX_SIZE: Final = 1 << 17
MAGLEV_TABLE_SIZE: Final = 65537


def hash64(data: bytes) -> int:
    """BLAKE2b-64 of ``data`` as an unsigned little-endian integer (the documented key hash)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


class Balancer:
    """What every policy offers: ``pick(key)`` over its fixed endpoint tuple. (A base class,
    not a protocol: compiled code calls ``pick`` natively, where a protocol's method is
    called by name.)"""

    endpoints: tuple[Endpoint, ...]

    def pick(self, key: bytes | None) -> Endpoint:
        raise NotImplementedError


class WeightedRandom(Balancer):
    """Weighted random; also the fallback of hash policies for requests without a key."""

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self.endpoints = tuple(endpoints)
        self._random = rng.random
        weights = [e.weight for e in self.endpoints]
        self._equal = len(set(weights)) == 1
        self._cumulative = [float(c) for c in itertools.accumulate(weights)]
        self._total = self._cumulative[-1]
        self._n = len(self.endpoints)

    def pick(self, key: bytes | None = None) -> Endpoint:
        if self._equal:
            return self.endpoints[int(self._random() * self._n)]
        return self.endpoints[bisect.bisect_right(self._cumulative, self._random() * self._total)]


def edf_schedule(weights: Sequence[int], length: int) -> list[int]:
    """The first ``length`` indices an EDF scheduler yields for ``weights`` (pure, deterministic).

    Entry *i* is due at ``(k + 0.5) / w_i`` for k = 0, 1, ...; ties go to the lower index.
    Over one cycle of ``sum(weights)`` picks each index appears exactly ``w_i`` times.
    """
    heap = [(0.5 / w, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    out: list[int] = []
    for _ in range(length):
        deadline, i = heap[0]
        out.append(i)
        heapq.heapreplace(heap, (deadline + 1.0 / weights[i], i))
    return out


class RoundRobin(Balancer):
    """Smooth weighted round robin (EDF); a precomputed cycle when it is small enough."""

    def __init__(self, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self.endpoints = tuple(endpoints)
        g = math.gcd(*(e.weight for e in self.endpoints))
        self._weights = [e.weight // g for e in self.endpoints]
        total = sum(self._weights)
        self._heap: list[tuple[float, int]] = []
        if total <= SCHEDULE_LIMIT:
            order = edf_schedule(self._weights, total)
            start = rng.randrange(total)
            self._schedule = [self.endpoints[i] for i in order[start:] + order[:start]]
        else:
            self._schedule = []
            self._heap = [(0.5 / w, i) for i, w in enumerate(self._weights)]
            heapq.heapify(self._heap)
            for _ in range(rng.randrange(len(self.endpoints))):
                self._advance()
        self._at = 0  # the schedule's next entry

    def _advance(self) -> Endpoint:
        deadline, i = self._heap[0]
        heapq.heapreplace(self._heap, (deadline + 1.0 / self._weights[i], i))
        return self.endpoints[i]

    def pick(self, key: bytes | None = None) -> Endpoint:
        schedule = self._schedule
        if not schedule:
            return self._advance()
        at = self._at
        self._at = at + 1 if at + 1 < len(schedule) else 0
        return schedule[at]


class LeastRequest(Balancer):
    """Power of ``choice_count`` choices on in-flight counts, weighted like Envoy."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
        in_flight: Mapping[str, int],
        choice_count: int = 2,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self._addresses = [e.address for e in self.endpoints]
        self._weights = [e.weight for e in self.endpoints]
        self._cumulative = [float(c) for c in itertools.accumulate(self._weights)]
        self._total = self._cumulative[-1]
        self._equal = len(set(self._weights)) == 1
        self._n = len(self.endpoints)
        self._random = rng.random
        self._in_flight = in_flight
        self._choices = max(1, choice_count)

    def pick(self, key: bytes | None = None) -> Endpoint:
        if self._n == 1:
            return self.endpoints[0]
        get = self._in_flight.get
        addresses = self._addresses
        if self._equal:
            rand, n = self._random, self._n
            best = int(rand() * n)
            best_load = get(addresses[best], 0)
            for _ in range(self._choices - 1):
                cand = int(rand() * n)
                load = get(addresses[cand], 0)
                if load < best_load:
                    best, best_load = cand, load
            return self.endpoints[best]
        weights, cumulative, total = self._weights, self._cumulative, self._total
        rand, search = self._random, bisect.bisect_right
        best = search(cumulative, rand() * total)
        score = (get(addresses[best], 0) + 1) / weights[best]
        for _ in range(self._choices - 1):
            cand = search(cumulative, rand() * total)
            cand_score = (get(addresses[cand], 0) + 1) / weights[cand]
            if cand_score < score:
                best, score = cand, cand_score
        return self.endpoints[best]


class RingHash(Balancer):
    """Consistent hashing on a ring of BLAKE2b-64 points; keyless requests go random."""

    def __init__(
        self, endpoints: Sequence[Endpoint], rng: random.Random, group_weight: int | None = None
    ) -> None:
        self.endpoints = tuple(endpoints)
        self._fallback = WeightedRandom(self.endpoints, rng).pick
        total = sum(e.weight for e in self.endpoints)
        group = max(total, group_weight or 0)
        per_weight = max(1, math.ceil(RING_TARGET_SIZE / group))
        per_weight = min(per_weight, max(1, RING_MAX_SIZE // total))
        points: list[tuple[int, int]] = []
        for index, ep in enumerate(self.endpoints):
            count = ep.weight * per_weight
            prefix = ep.address.encode() + b"_"
            points.extend((hash64(prefix + str(i).encode()), index) for i in range(count))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [self.endpoints[i] for _, i in points]
        self._n = len(points)

    def pick(self, key: bytes | None) -> Endpoint:
        if key is None:
            return self._fallback()
        i = bisect.bisect_left(self._hashes, hash64(key))
        return self._owners[i if i < self._n else 0]


def maglev_table(names: Sequence[bytes], weights: Sequence[int], size: int) -> list[int]:
    """Populate a Maglev lookup table (pure): entry -> index into ``names``.

    Permutation of endpoint *i*: ``(offset_i + j * skip_i) mod size`` with offset and skip from
    salted :func:`hash64`; ``size`` must be prime. Weighted as Envoy: in round *r* endpoint *i*
    claims a slot only if ``r * w_i >= target_i``, then ``target_i += max(w)``.
    """
    n = len(names)
    offsets = [hash64(b"offset:" + nm) % size for nm in names]
    skips = [hash64(b"skip:" + nm) % (size - 1) + 1 for nm in names]
    nexts = [0] * n
    targets = [0] * n
    max_w = max(weights)
    table = [-1] * size
    filled = 0
    iteration = 0
    while filled < size:
        iteration += 1
        for i in range(n):
            if iteration * weights[i] < targets[i]:
                continue
            targets[i] += max_w
            off, skip, j = offsets[i], skips[i], nexts[i]
            c = (off + j * skip) % size
            while table[c] >= 0:
                j += 1
                c = (off + j * skip) % size
            table[c] = i
            nexts[i] = j + 1
            filled += 1
            if filled == size:
                break
    return table


class Maglev(Balancer):
    """Maglev consistent hashing (table of 65537 entries); keyless requests go random."""

    def __init__(
        self, endpoints: Sequence[Endpoint], rng: random.Random, size: int = MAGLEV_TABLE_SIZE
    ) -> None:
        self.endpoints = tuple(endpoints)
        self._fallback = WeightedRandom(self.endpoints, rng).pick
        names = [e.address.encode() for e in self.endpoints]
        index = maglev_table(names, [e.weight for e in self.endpoints], size)
        self._table = [self.endpoints[i] for i in index]
        self._size = size

    def pick(self, key: bytes | None) -> Endpoint:
        if key is None:
            return self._fallback()
        return self._table[hash64(key) % self._size]


def make_balancer(
    lb: LoadBalancer,
    endpoints: Sequence[Endpoint],
    rng: random.Random,
    in_flight: Mapping[str, int],
    group_weight: int | None = None,
) -> Balancer:
    """Build the balancer ``lb.policy`` names over a non-empty endpoint sequence.

    ``group_weight`` is the total weight of the endpoint group before health filtering
    (ring sizing, see ``ring_hash`` above).
    """
    if not endpoints:
        raise ValueError("a balancer needs at least one endpoint")
    policy = lb.policy
    if policy == "round_robin":
        return RoundRobin(endpoints, rng)
    if policy == "random":
        return WeightedRandom(endpoints, rng)
    if policy == "least_request":
        return LeastRequest(endpoints, rng, in_flight, lb.choice_count)
    if policy == "ring_hash":
        return RingHash(endpoints, rng, group_weight)
    if policy == "maglev":
        return Maglev(endpoints, rng)
    raise ValueError(f"unknown load balancer policy {policy!r}")


def request_hash_key(
    lb: LoadBalancer, header: Callable[[str], str | None], source_ip: str
) -> bytes | None:
    """The hash key of a request for ``ring_hash``/``maglev``; None when absent or not hashing.

    ``header(name)`` returns a request header by lower-case name (first value) or None.
    The cookie header is parsed with :class:`http.cookies.SimpleCookie`.
    """
    if lb.policy not in ("ring_hash", "maglev"):
        return None
    if lb.hash_header is not None:
        value = header(lb.hash_header)
        return None if value is None else value.encode("utf-8", "surrogateescape")
    if lb.hash_cookie is not None:
        raw = header("cookie")
        if raw is None:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(lb.hash_cookie)
        return None if morsel is None else morsel.value.encode("utf-8", "surrogateescape")
    if lb.hash_source_ip:
        return source_ip.encode() if source_ip else None
    return None
