"""A tiny in-memory time-series store with the PromQL semantics the alert rules need.

Theory of operation: the alert evaluator ingests ``Metrics.collect()`` every 15 s. Each
series keeps parallel ``array('d')`` columns: timestamps, values, and the running sum of
counter-reset corrections, so ``rate()`` over any window is two bisections and O(1)
arithmetic, even over the 3-day SLO windows (24 bytes per sample).

The functions reproduce Prometheus 2.42 exactly (checked against ``promtool`` in
tests/promtool/):

- range selectors are *closed* intervals ``[t - range, t]``;
- ``rate()`` is ``extrapolatedRate``: increase with counter resets corrected, extrapolated
  towards the window edges when the first/last sample is within 1.1 average intervals of
  them (else by half an interval), never extrapolated below zero, and no result with fewer
  than two samples;
- instant selectors take the newest sample within a 5m lookback unless the series went
  stale (it was missing from the newest snapshot, as a scrape would mark it);
- ``histogram_quantile`` sorts buckets by ``le``, merges equal bounds, forces monotonic
  counts and interpolates linearly inside the bucket (NaN without observations).

Timestamps are rounded to milliseconds on ingest, like Prometheus sample timestamps.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from .metrics import LabelKey, Samples

LOOKBACK_S: Final = 300.0
INGEST_SLICE: Final = 2000
"""Series :meth:`Store.ingest_in_slices` appends between two pauses (a few ms of work)."""


class Series:
    """One series' samples, oldest first; ``head`` marks the first live sample."""

    __slots__ = ("c", "head", "stale", "t", "v")

    def __init__(self) -> None:
        self.t = array("d")
        self.v = array("d")
        self.c = array("d")  # cumulative reset corrections up to and including each sample
        self.head = 0
        self.stale = False

    def append(self, ts: float, value: float) -> None:
        correction = 0.0
        if len(self.t) > self.head:
            correction = self.c[-1]
            if value < self.v[-1]:
                correction += self.v[-1]
        self.t.append(ts)
        self.v.append(value)
        self.c.append(correction)
        self.stale = False

    def trim(self, before: float) -> None:
        """Forget samples older than ``before`` (compacting once half the columns are dead)."""
        self.head = max(self.head, bisect_left(self.t, before, self.head))
        if self.head > 64 and self.head * 2 > len(self.t):
            del self.t[: self.head], self.v[: self.head], self.c[: self.head]
            self.head = 0

    def empty(self) -> bool:
        return len(self.t) <= self.head

    def bounds(self, start: float, end: float) -> tuple[int, int]:
        """Indices ``[i, j)`` of samples with ``start <= t <= end``."""
        i = bisect_left(self.t, start, self.head)
        return i, bisect_right(self.t, end, i)

    def rate(self, now: float, range_s: float) -> float | None:
        """PromQL ``rate(series[range])`` evaluated at ``now``; None when it has no result."""
        start = now - range_s
        i, j = self.bounds(start, now)
        n = j - i
        if n < 2:
            return None
        t, v, c = self.t, self.v, self.c
        first_t, first_v, last_t = t[i], v[i], t[j - 1]
        result = v[j - 1] - first_v + (c[j - 1] - c[i])
        to_start = first_t - start
        to_end = now - last_t
        sampled = last_t - first_t
        average = sampled / (n - 1)
        if result > 0 and first_v >= 0:
            to_start = min(to_start, sampled * (first_v / result))
        threshold = average * 1.1
        interval = sampled
        interval += to_start if to_start < threshold else average / 2
        interval += to_end if to_end < threshold else average / 2
        return result * (interval / sampled) / range_s

    def latest(self, now: float, lookback_s: float = LOOKBACK_S) -> float | None:
        """PromQL instant selector at ``now``: newest sample within the lookback, if not stale."""
        if self.stale:
            return None
        i, j = self.bounds(now - lookback_s, now)
        return self.v[j - 1] if j > i else None


Retention = Callable[[str, str], float | None]
"""(sample name, service) -> seconds of history to keep; None: don't store the series."""


class Store:
    """Series by sample name, then ``service`` label, then full label set."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.data: dict[str, dict[str, dict[LabelKey, Series]]] = {}

    def ingest(self, now: float, samples: Samples) -> None:
        """Append one snapshot taken at ``now``; series absent from it become stale."""
        for _ in self.ingest_in_slices(now, samples):
            pass

    def ingest_in_slices(
        self, now: float, samples: Samples, per_slice: int = INGEST_SLICE
    ) -> Iterator[None]:
        """:meth:`ingest`, pausing (a ``yield``) after every ``per_slice`` series so that the
        caller can let the event loop run: at 1,000 services the latency buckets alone are
        15,000 series, and ingesting them at once stalled the loop ~50 ms every 15 s.
        A reader in a pause sees the new sample on some series only; it reads at the previous
        evaluation time, which the new samples are after."""
        now = round(now * 1000) / 1000
        done = 0
        for name, rows in samples.items():
            for labels, value in rows.items():
                service = label(labels, "service")
                keep = self.retention(name, service)
                if keep is None:
                    continue
                by_service = self.data.setdefault(name, {}).setdefault(service, {})
                series = by_service.get(labels)
                if series is None:
                    series = by_service[labels] = Series()
                series.append(now, value)
                series.trim(now - keep)
                done += 1
                if done % per_slice == 0:
                    yield
        for name, services in list(self.data.items()):
            for service, by_labels in list(services.items()):
                keep = self.retention(name, service) or 0.0
                # A series this snapshot had ends at ``now`` (no set of what was seen: at
                # 1,000 services its 18,000 tuples set off full cyclic collections).
                absent = [k for k, s in by_labels.items() if s.empty() or s.t[-1] != now]
                for labels in absent:
                    old = by_labels[labels]
                    old.stale = True
                    old.trim(now - keep)
                    if old.empty():
                        del by_labels[labels]
                done += len(by_labels)
                if done >= per_slice:
                    done = 0
                    yield

    def select(self, name: str, service: str) -> Iterable[tuple[LabelKey, Series]]:
        return self.data.get(name, {}).get(service, {}).items()


def label(labels: LabelKey, name: str) -> str:
    """The value of label ``name`` ("" when absent, as in PromQL)."""
    for key, value in labels:
        if key == name:
            return value
    return ""


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """PromQL ``histogram_quantile`` over ``{upper bound: cumulative count}`` (one group)."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return math.nan
    counts: list[float] = []
    running = -math.inf
    for bound in bounds:
        running = max(running, buckets[bound])  # ensureMonotonic
        counts.append(running)
    if len(bounds) < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = bisect_left(counts, rank, 0, len(counts) - 1)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


def parse_le(value: str) -> float | None:
    """A bucket's ``le`` label as a float (``+Inf`` included); None when unparsable."""
    try:
        return float(value)
    except ValueError:
        return None
