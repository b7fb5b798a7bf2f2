"""Endpoint health: active-check state machine, passive outlier detection, failover selection.

Theory of operation
-------------------
Three pure pieces and one I/O function:

* :class:`HealthState` is the sans-IO up/down machine of one endpoint. It starts healthy. A
  result that agrees with the current state resets the streak; a disagreeing result extends it,
  and the state flips when the streak reaches the threshold of the *target* state
  (``healthy_threshold`` successes to come up, ``unhealthy_threshold`` failures to go down).
  The transitions are the table :data:`TRANSITIONS`.
* :class:`OutlierDetector` is Envoy's consecutive-5xx detector for one service. ``report``
  counts consecutive failures (status >= 500, connect failure, reset, timeout) per address and
  ejects at ``consecutive_5xx`` unless that would put more than ``max_ejection_percent`` of the
  endpoints out at once; as Envoy, one endpoint may always be ejected whatever the percent (so
  with 10 % of 3 endpoints the bad one still goes; a second one waits). An ejection
  lasts ``base_ejection_time x times ejected``. ``review`` runs every ``interval``: it returns
  expired ejections and lowers ``times ejected`` by one for endpoints that stayed in.
* :func:`failover_select` implements the failover order (reference.md) over one group (a service or
  one of its subsets): the listed zones in order; the first zone whose healthy share (healthy /
  all in the zone) is at least ``panic_threshold`` percent and that has a healthy endpoint wins;
  otherwise every healthy endpoint of the group, in any zone or none (endpoints with no or an
  unlisted zone are never preferred, only used with the rest; HAProxy's chain does the same).
  An empty result means "no healthy endpoint" (the caller tries the backup, then 503).
* Probe timing, pure functions with the clock passed in (the asyncio shell is ``prober.py``):
  :func:`spread_phases` gives the first probes of all endpoints sharing an interval evenly spaced
  offsets over the *whole* interval (stratified: one random point per 1/N of it, so 10,000
  endpoints never probe in lockstep and two sidecars do not align); :func:`next_due` keeps each
  endpoint on its own grid ``phase + k x interval`` (no drift into bursts: a late or slow probe
  does not move the next one, and slots the loop missed are skipped, never made up in a burst);
  :func:`timer_verdict` is the loop-lag rule: a probe's timeout runs from when it was actually
  sent, and a timeout timer that fires more than :data:`LAG_TOLERANCE_S` late (the event loop
  was busy, so an answer may be sitting unread in the socket) is re-armed once more instead of
  failing the endpoint; only a timer that fires on time counts as the endpoint's timeout.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

from ..tables import Endpoint, HealthCheck, OutlierDetection

LAG_TOLERANCE_S: Final = 0.05
"""A timer firing later than this after its deadline means the event loop, not the peer, was
slow: the loop's own lag on a busy but healthy sidecar stays well below it."""

# (currently healthy, probe succeeded) -> (threshold attribute or None = reset streak)
TRANSITIONS: Final[dict[tuple[bool, bool], str | None]] = {
    (True, True): None,
    (True, False): "unhealthy_threshold",
    (False, False): None,
    (False, True): "healthy_threshold",
}


class HealthState:
    """Up/down state of one endpoint under active checks; starts healthy."""

    __slots__ = ("check", "healthy", "streak")

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self.healthy = True
        self.streak = 0

    def on_result(self, ok: bool) -> bool:
        """Feed one probe result; True when the state flipped."""
        threshold_name = TRANSITIONS[(self.healthy, ok)]
        if threshold_name is None:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= int(getattr(self.check, threshold_name)):
            self.healthy = not self.healthy
            self.streak = 0
            return True
        return False


CONNECTED: Final = "connected"
"""The outcome of a tcp connect that succeeded (a tcp connection has no status)."""


def is_failure(outcome: int | str) -> bool:
    """Outcomes that count towards ``consecutive_5xx`` (local errors count as gateway errors;
    for tcp services, failed connects)."""
    return outcome >= 500 if isinstance(outcome, int) else outcome != CONNECTED


class OutlierDetector:
    """Passive ejection of the endpoints of one service; time comes in as ``now`` arguments."""

    def __init__(self, policy: OutlierDetection) -> None:
        self.policy = policy
        self.consecutive: dict[str, int] = {}
        self.ejected_until: dict[str, float] = {}
        self.times_ejected: dict[str, int] = {}

    def is_ejected(self, address: str) -> bool:
        return address in self.ejected_until

    def report(self, address: str, outcome: int | str, now: float, total: int) -> bool:
        """Count one live outcome; True when it ejected ``address`` (``total`` endpoints now)."""
        if not is_failure(outcome):
            self.consecutive[address] = 0
            return False
        count = self.consecutive.get(address, 0) + 1
        self.consecutive[address] = count
        if count < self.policy.consecutive_5xx or address in self.ejected_until:
            return False
        ejected = len(self.ejected_until)
        if ejected and (ejected + 1) * 100 > self.policy.max_ejection_percent * total:
            return False
        times = self.times_ejected.get(address, 0) + 1
        self.times_ejected[address] = times
        self.ejected_until[address] = now + self.policy.base_ejection_time_s * times
        self.consecutive[address] = 0
        return True

    def review(self, now: float) -> list[str]:
        """Return expired ejections (sorted); decay ``times ejected`` of endpoints left in."""
        returned = sorted(a for a, until in self.ejected_until.items() if until <= now)
        for address in returned:
            del self.ejected_until[address]
        for address, times in list(self.times_ejected.items()):
            if address not in self.ejected_until and address not in returned and times > 0:
                self.times_ejected[address] = times - 1
        return returned

    def adopt(self, other: OutlierDetector, address: str) -> None:
        """Take ``address``'s counts and ejection from ``other`` (the detector a reload
        replaces), so an ejected endpoint stays out for the rest of its ejection."""
        if address in other.consecutive:
            self.consecutive[address] = other.consecutive[address]
        if address in other.ejected_until:
            self.ejected_until[address] = other.ejected_until[address]
        if address in other.times_ejected:
            self.times_ejected[address] = other.times_ejected[address]

    def forget(self, keep: Iterable[str]) -> None:
        """Drop state of addresses no longer discovered."""
        alive = set(keep)
        for table in (self.consecutive, self.ejected_until, self.times_ejected):
            for address in [a for a in table if a not in alive]:
                del table[address]


def failover_select(
    endpoints: Sequence[Endpoint],
    healthy: Callable[[str], bool],
    zones: Sequence[str],
    panic_threshold: float,
) -> tuple[Endpoint, ...]:
    """The documented failover order over one endpoint group; () when no endpoint is healthy."""
    up = tuple(e for e in endpoints if healthy(e.address))
    if not up or not zones:
        return up
    position = {z: i for i, z in enumerate(zones)}
    members = [0] * len(zones)
    members_up: list[list[Endpoint]] = [[] for _ in zones]
    for ep in endpoints:
        i = position.get(ep.zone) if ep.zone is not None else None
        if i is not None:
            members[i] += 1
    for ep in up:
        i = position.get(ep.zone) if ep.zone is not None else None
        if i is not None:
            members_up[i].append(ep)
    for total, zone_up in zip(members, members_up, strict=True):
        if zone_up and len(zone_up) * 100 >= panic_threshold * total:
            return tuple(zone_up)
    return up


def spread_phases(count: int, interval_s: float, rng: random.Random) -> list[float]:
    """Offsets in ``[0, interval_s)`` of the first probes of ``count`` endpoints: one uniform
    point in each of ``count`` equal strata, so any window of the interval holds its share."""
    return [interval_s * (i + rng.random()) / count for i in range(count)]


def next_due(due: float, interval_s: float, now: float) -> float:
    """The next slot of an endpoint whose slot ``due`` just came: ``due + interval`` on its own
    grid, or the first grid point after ``now`` when the loop fell behind (missed slots are
    skipped, not made up in a burst)."""
    nxt = due + interval_s
    if nxt <= now:
        nxt += math.ceil((now - nxt) / interval_s + 1e-9) * interval_s
    return nxt


def timer_verdict(deadline: float, now: float) -> Literal["timeout", "recheck"]:
    """A probe's timeout timer fired at ``now``: the endpoint timed out only if the timer fired
    on time; a late one (loop lag) is re-armed, giving queued socket reads their turn first."""
    return "recheck" if now - deadline > LAG_TOLERANCE_S else "timeout"
