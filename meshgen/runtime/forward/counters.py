"""The series the request machine and tcp forwarding write, one dict update per event.

Why a class of its own, below the exposition: the forwarding code calls these on every request,
and holding the concrete class (not a protocol) lets compiled (mypyc) code call them natively.
``observe.metrics.Metrics`` extends it with the other series and their exposition; the metric
names and labels are documented there (and in docs/reference.md, Metrics).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# Request latency buckets (seconds): 1 ms .. 30 s, dense where proxies usually live.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Histogram:
    """Per-bucket (non-cumulative) counts plus sum; cumulated only when read."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def cumulative(self) -> list[int]:
        out: list[int] = []
        running = 0
        for count in self.counts:
            running += count
            out.append(running)
        return out


class Series:
    """One ``meshgen_requests_total`` series' count and the duration histogram of its
    (listener, route, service), together: a finished request updates both after one lookup
    (two counters keyed by tuples cost a tuple, two hashes and three lookups more)."""

    __slots__ = ("count", "hist")

    def __init__(self, hist: Histogram) -> None:
        self.count = 0
        self.hist = hist


RequestKey = tuple[str, str, str, str, int, str]
"""``meshgen_requests_total``'s labels: listener, route, service, subset, code, grpc_status."""


class Counters:
    """Requests, tries, retries, 429s, denials, circuit state and tcp traffic, keyed by
    label-value tuples (no locks: the runtime is one asyncio thread)."""

    def __init__(self) -> None:
        self.requests: dict[RequestKey, Series] = {}
        self.durations: dict[tuple[str, str, str], Histogram] = {}
        # service -> endpoint -> code -> count: no key tuple to make and hash per try
        self._upstream: dict[str, dict[str, dict[int | str, int]]] = {}
        self.retries: dict[tuple[str], int] = {}
        self.circuit_open: dict[tuple[str], int] = {}
        self.rate_limited: dict[tuple[str], int] = {}
        self.denied: dict[tuple[str, str, str, str], int] = {}
        self.tcp_connections: dict[tuple[str, str], int] = {}
        self.tcp_active: dict[tuple[str, str], int] = {}
        self.tcp_bytes: dict[tuple[str, str, str], int] = {}

    def observe_request(
        self,
        listener: str,
        route: str,
        service: str,
        subset: str,
        code: int,
        duration_s: float,
        grpc_status: str = "",
    ) -> None:
        key = (listener, route, service, subset, code, grpc_status)
        series = self.requests.get(key)
        if series is None:
            series = self._series(key)
        series.count += 1
        hist = series.hist
        i = 0  # the first bound not below the duration (``bisect_left`` as a loop: compiled
        for bound in LATENCY_BUCKETS:  # code runs it natively instead of calling the module
            if duration_s <= bound:  # by name; most requests stop at the first bound)
                break
            i += 1
        hist.counts[i] += 1
        hist.total += duration_s

    def _series(self, key: RequestKey) -> Series:
        """A new request series, with its (listener, route, service) histogram."""
        hkey = (key[0], key[1], key[2])
        hist = self.durations.get(hkey)
        if hist is None:
            hist = self.durations[hkey] = Histogram()
        series = self.requests[key] = Series(hist)
        return series

    def inc_upstream(self, service: str, endpoint: str, code: int | str) -> None:
        endpoints = self._upstream.get(service)
        if endpoints is None:
            endpoints = self._upstream[service] = {}
        codes = endpoints.get(endpoint)
        if codes is None:
            codes = endpoints[endpoint] = {}
        codes[code] = codes.get(code, 0) + 1

    @property
    def upstream_requests(self) -> dict[tuple[str, str, int | str], int]:
        """``meshgen_upstream_requests_total`` by (service, endpoint, code)."""
        return {
            (service, endpoint, code): n
            for service, endpoints in self._upstream.items()
            for endpoint, codes in endpoints.items()
            for code, n in codes.items()
        }

    def inc_retry(self, service: str) -> None:
        key = (service,)
        self.retries[key] = self.retries.get(key, 0) + 1

    def set_circuit_open(self, service: str, is_open: bool) -> None:
        self.circuit_open[(service,)] = 1 if is_open else 0

    def inc_rate_limited(self, route: str) -> None:
        key = (route,)
        self.rate_limited[key] = self.rate_limited.get(key, 0) + 1

    def inc_denied(self, listener: str, source: str, service: str, mode: str) -> None:
        key = (listener, source, service, mode)
        self.denied[key] = self.denied.get(key, 0) + 1

    def tcp_opened(self, listener: str, service: str) -> None:
        """A tcp connection to ``service`` is forwarded from now on."""
        key = (listener, service)
        self.tcp_connections[key] = self.tcp_connections.get(key, 0) + 1
        self.tcp_active[key] = self.tcp_active.get(key, 0) + 1

    def tcp_closed(self, listener: str, service: str) -> None:
        key = (listener, service)
        self.tcp_active[key] = self.tcp_active.get(key, 1) - 1

    def add_tcp_bytes(self, key: tuple[str, str, str], size: int) -> None:
        """``key`` is (listener, service, ``rx`` or ``tx``), made once per connection."""
        self.tcp_bytes[key] = self.tcp_bytes.get(key, 0) + size

    def declare(self, services: Iterable[str], limited_routes: Iterable[str]) -> None:
        """Start the rare-event series at 0 (existing values are kept: a reload)."""
        for service in services:
            self.circuit_open.setdefault((service,), 0)
            self.retries.setdefault((service,), 0)
        for route in limited_routes:
            self.rate_limited.setdefault((route,), 0)

    def forget_service(self, service: str) -> None:
        """End a removed service's circuit and retry series."""
        self.circuit_open.pop((service,), None)
        self.retries.pop((service,), None)

    def forget_route(self, route: str) -> None:
        """End a removed (or no longer rate-limited) route's 429 series."""
        self.rate_limited.pop((route,), None)
