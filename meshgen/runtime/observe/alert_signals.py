"""Alert signals over the sample store, computed as the generated PromQL computes them.

Each signal is what ``DIST/prometheus/rules.yml`` writes for it, over the same metrics and
the same ``SIGNAL_WINDOW_S`` (5m): ``error_rate`` is ``(sum(rate(errors)) or vector(0)) /
(sum(rate(all)) > 0)``, where an error is a 5xx or a gRPC request whose ``grpc_status`` is one
of ``policy/grpc.py``'s ``ERROR_STATUSES`` (one series counts once), the latency quantiles are
``histogram_quantile`` over the summed bucket rates, the health signals read the
``meshgen_endpoint_healthy`` gauges and ``cert_expiry`` the soonest certificate expiry. A
signal with no sample (no traffic, no series) is None, never 0, so rules on it cannot fire.
"""

from __future__ import annotations

from typing import Final

from ..policy.grpc import is_error
from .timeseries import Store, histogram_quantile, label, parse_le

SIGNAL_WINDOW_S: Final = 300.0
REQUESTS: Final = "meshgen_requests_total"
BUCKETS: Final = "meshgen_request_duration_seconds_bucket"
HEALTHY: Final = "meshgen_endpoint_healthy"
CERT_EXPIRY: Final = "meshgen_cert_expiry_timestamp_seconds"
UPSTREAM: Final = "meshgen_upstream_requests_total"
QUANTILES: Final = {"p50_latency": 0.5, "p90_latency": 0.9, "p99_latency": 0.99}
RATIO_SIGNALS: Final = frozenset({"error_rate", "healthy_ratio"})
DURATION_SIGNALS: Final = frozenset({*QUANTILES, "cert_expiry"})
_METRIC = {
    "error_rate": REQUESTS,
    "request_rate": REQUESTS,
    "healthy_endpoints": HEALTHY,
    "healthy_ratio": HEALTHY,
    "cert_expiry": CERT_EXPIRY,
}


def signal_metric(signal: str) -> str:
    """The metric a signal reads (the latency quantiles read the histogram buckets)."""
    return _METRIC.get(signal, BUCKETS)


def _sum_rate(
    store: Store, service: str, now: float, range_s: float, only_errors: bool
) -> float | None:
    total: float | None = None
    for labels, series in store.select(REQUESTS, service):
        if only_errors and not is_error(label(labels, "code"), label(labels, "grpc_status")):
            continue
        rate = series.rate(now, range_s)
        if rate is not None:
            total = rate if total is None else total + rate
    return total


def error_ratio(store: Store, service: str, now: float, range_s: float) -> float | None:
    """``(sum(rate(errors)) or vector(0)) / (sum(rate(all)) > 0)``."""
    requests = _sum_rate(store, service, now, range_s, only_errors=False)
    if requests is None or not requests > 0:
        return None
    errors = _sum_rate(store, service, now, range_s, only_errors=True)
    return (errors or 0.0) / requests


def _gauges(store: Store, name: str, service: str, now: float) -> list[float]:
    values = (series.latest(now) for _, series in store.select(name, service))
    return [v for v in values if v is not None]


def signal_value(store: Store, service: str, signal: str, now: float) -> float | None:
    """The signal's value at ``now``, or None when PromQL would return no sample."""
    if signal == "error_rate":
        return error_ratio(store, service, now, SIGNAL_WINDOW_S)
    if signal == "request_rate":
        return _sum_rate(store, service, now, SIGNAL_WINDOW_S, only_errors=False)
    if signal in QUANTILES:
        buckets: dict[float, float] = {}
        for labels, series in store.select(BUCKETS, service):
            bound = parse_le(label(labels, "le"))
            rate = series.rate(now, SIGNAL_WINDOW_S)
            if bound is not None and rate is not None:
                buckets[bound] = buckets.get(bound, 0.0) + rate
        return histogram_quantile(QUANTILES[signal], buckets) if buckets else None
    if signal in ("healthy_endpoints", "healthy_ratio"):
        values = _gauges(store, HEALTHY, service, now)
        if not values:
            return None
        return sum(values) if signal == "healthy_endpoints" else sum(values) / len(values)
    if signal == "cert_expiry":
        values = _gauges(store, CERT_EXPIRY, service, now)
        return min(values) - now if values else None
    raise ValueError(f"unknown signal {signal!r}")
