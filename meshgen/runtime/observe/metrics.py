"""The runtime's own metrics and their Prometheus text exposition (format 0.0.4).

Theory of operation: the proxy and the upstreams call the ``inc_*`` / ``set_*`` /
``observe_request`` methods on the hot path, so each one is a single dict update keyed by a
tuple of label values (no locks: the runtime is one asyncio thread); the series forwarding
writes on every request are kept by the base class, ``forward/counters.py``'s ``Counters``, a
layer below, so that compiled forwarding code calls them natively. Nothing is formatted
until ``render()`` (for ``/metrics``) or ``collect()`` (for the embedded alert evaluator)
is called. The metric names and labels are part of the public contract (docs/reference.md, Metrics).

Series that count rare events would otherwise appear only after the first one, which breaks
``absent()``, ``rate()`` over the first increment and dashboards: :meth:`Metrics.declare` starts
``meshgen_circuit_open`` and ``meshgen_retries_total`` at 0 for every service, and
``meshgen_rate_limited_total`` for every route that can answer 429 (its own rate limit, or one of
its destination services has one); :meth:`Metrics.declare_listener` starts
``meshgen_connections_rejected_total`` for each reason of each listener served;
:meth:`Metrics.forget_service` / :meth:`forget_route` end them when a reload removes the service
or route.

``collect()`` returns the same samples ``render()`` prints, as plain data keyed by sample
name and sorted label pairs, so the alert evaluator sees exactly what Prometheus would
scrape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from ..forward.counters import LATENCY_BUCKETS, Counters

LabelKey = tuple[tuple[str, str], ...]
"""Sorted ``(label name, label value)`` pairs identifying one series."""
PAIRS_CACHE_SIZE: Final = 200_000
"""Most series whose label pairs ``collect`` keeps (it is cleared beyond that: forgotten
series leave it then)."""

Samples = dict[str, dict[LabelKey, float]]
"""Sample name (``meshgen_requests_total``, ``..._bucket``) -> series -> value."""

_HISTOGRAM_SAMPLES = frozenset(
    f"meshgen_request_duration_seconds_{part}" for part in ("bucket", "sum", "count")
)

_BUCKET_LABELS: tuple[str, ...] = (*(repr(b) for b in LATENCY_BUCKETS), "+Inf")

_HELP: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (type, help, label names)
    "meshgen_requests_total": (
        "counter",
        "Requests answered by the runtime, after retries (local 4xx/5xx included); "
        'grpc_status is the gRPC status of a gRPC request ("" for others).',
        ("listener", "route", "service", "subset", "code", "grpc_status"),
    ),
    "meshgen_request_duration_seconds": (
        "histogram",
        "Time from request received to response headers sent.",
        ("listener", "route", "service"),
    ),
    "meshgen_upstream_requests_total": (
        "counter",
        "Tries sent to upstream endpoints, by outcome (status or failure kind).",
        ("service", "endpoint", "code"),
    ),
    "meshgen_endpoint_healthy": (
        "gauge",
        "1 when the endpoint passes health checks and is not ejected, else 0.",
        ("service", "endpoint"),
    ),
    "meshgen_retries_total": ("counter", "Retries sent.", ("service",)),
    "meshgen_ejections_total": (
        "counter",
        "Outlier-detection ejections.",
        ("service", "endpoint"),
    ),
    "meshgen_circuit_open": (
        "gauge",
        "1 while the service's circuit breaker refuses requests.",
        ("service",),
    ),
    "meshgen_rate_limited_total": ("counter", "Requests refused with 429.", ("route",)),
    "meshgen_denied_total": (
        "counter",
        "Requests access rules deny: refused with 403 (mode enforce), or forwarded on a "
        "listener with access: audit (mode audit).",
        ("listener", "from", "to", "mode"),
    ),
    "meshgen_connections_rejected_total": (
        "counter",
        "Client connections refused or closed by a listener's limits, by reason.",
        ("listener", "reason"),
    ),
    "meshgen_tcp_connections_total": (
        "counter",
        "Connections a tcp listener forwarded to a service (the upstream connection opened).",
        ("listener", "service"),
    ),
    "meshgen_tcp_active_connections": (
        "gauge",
        "Connections a tcp listener is forwarding now.",
        ("listener", "service"),
    ),
    "meshgen_tcp_bytes_total": (
        "counter",
        "Bytes a tcp listener forwarded: rx received from clients, tx sent to them.",
        ("listener", "service", "direction"),
    ),
    "meshgen_cert_expiry_timestamp_seconds": (
        "gauge",
        "notAfter of a certificate the runtime uses, as a Unix time.",
        ("service", "file"),
    ),
}


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Render a sample value the way Prometheus client libraries do."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Metrics(Counters):
    """Counters, gauges and one histogram, keyed by label-value tuples (the documented names):
    what forwarding writes (:class:`~..forward.counters.Counters`) and the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.endpoint_healthy: dict[tuple[str, str], int] = {}
        self._pairs: dict[tuple[str, tuple[object, ...]], LabelKey] = {}  # see ``collect``
        self._histogram_labels: dict[tuple[str, str, str], tuple[LabelKey, tuple[LabelKey, ...]]]
        self._histogram_labels = {}
        """Each histogram's label pairs, without and with each ``le``, made once: building
        them on every collection allocated 15,000 tuples at 1,000 services, enough to set
        off a full cyclic collection (a 20-35 ms pause) nearly every evaluation."""
        self._prefixes: dict[tuple[str, tuple[object, ...]], str] = {}
        """Each series' rendered ``name{labels}``, made once: escaping the labels of every
        series on every scrape took half of ``render``'s ~70 ms at 10,000 endpoints."""
        self.ejections: dict[tuple[str, str], int] = {}
        self.cert_expiry: dict[tuple[str, str], float] = {}
        self.rejected: dict[tuple[str, str], int] = {}

    # --- the rest of the writing (forwarding writes through Counters) -------------------
    def set_endpoint_healthy(self, service: str, endpoint: str, healthy: bool) -> None:
        self.endpoint_healthy[(service, endpoint)] = 1 if healthy else 0

    def forget_endpoint(self, service: str, endpoint: str) -> None:
        """Drop an endpoint's gauge when discovery removes the endpoint (its series ends)."""
        self.endpoint_healthy.pop((service, endpoint), None)

    def inc_ejection(self, service: str, endpoint: str) -> None:
        key = (service, endpoint)
        self.ejections[key] = self.ejections.get(key, 0) + 1

    def inc_rejected(self, listener: str, reason: str) -> None:
        key = (listener, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def declare_listener(self, listener: str, reasons: Iterable[str]) -> None:
        """Start a listener's refusal series at 0 (kept while the process runs)."""
        for reason in reasons:
            self.rejected.setdefault((listener, reason), 0)

    def set_cert_expiry(self, service: str, file: str, not_after_ts: float) -> None:
        self.cert_expiry[(service, file)] = not_after_ts

    def forget_cert_expiry(self, service: str, file: str) -> None:
        """Drop a certificate's gauge when a reload stops loading that file (its series ends)."""
        self.cert_expiry.pop((service, file), None)

    # --- reading ------------------------------------------------------------------------
    def _families(self) -> Iterable[tuple[str, Iterable[tuple[tuple[object, ...], float]]]]:
        """(family name, (label values, value)...) for every non-histogram family."""
        yield "meshgen_requests_total", ((k, float(v.count)) for k, v in self.requests.items())
        yield (
            "meshgen_upstream_requests_total",
            ((k, float(v)) for k, v in self.upstream_requests.items()),
        )
        yield "meshgen_endpoint_healthy", ((k, float(v)) for k, v in self.endpoint_healthy.items())
        yield "meshgen_retries_total", ((k, float(v)) for k, v in self.retries.items())
        yield "meshgen_ejections_total", ((k, float(v)) for k, v in self.ejections.items())
        yield "meshgen_circuit_open", ((k, float(v)) for k, v in self.circuit_open.items())
        yield "meshgen_rate_limited_total", ((k, float(v)) for k, v in self.rate_limited.items())
        yield "meshgen_denied_total", ((k, float(v)) for k, v in self.denied.items())
        rejected = ((k, float(v)) for k, v in self.rejected.items())
        yield "meshgen_connections_rejected_total", rejected
        yield "meshgen_cert_expiry_timestamp_seconds", ((k, v) for k, v in self.cert_expiry.items())
        for name, counts in (
            ("meshgen_tcp_connections_total", self.tcp_connections),
            ("meshgen_tcp_active_connections", self.tcp_active),
            ("meshgen_tcp_bytes_total", self.tcp_bytes),
        ):
            yield name, ((k, float(v)) for k, v in counts.items())

    def _histogram_samples(self) -> Iterable[tuple[str, LabelKey, float]]:
        names = _HELP["meshgen_request_duration_seconds"][2]
        base = "meshgen_request_duration_seconds"
        bucket, total, count = f"{base}_bucket", f"{base}_sum", f"{base}_count"
        labels = self._histogram_labels
        if len(labels) > PAIRS_CACHE_SIZE:
            labels.clear()
        for key in sorted(self.durations):
            hist = self.durations[key]
            known = labels.get(key)
            if known is None:
                pairs = tuple(zip(names, key, strict=True))
                by_bucket = tuple((*pairs, ("le", le)) for le in _BUCKET_LABELS)
                known = labels[key] = (pairs, by_bucket)
            pairs, by_bucket = known
            cumulative = hist.cumulative()
            for bucket_pairs, running in zip(by_bucket, cumulative, strict=True):
                yield bucket, bucket_pairs, float(running)
            yield total, pairs, hist.total
            yield count, pairs, float(cumulative[-1])

    def collect(self, names: frozenset[str] | None = None) -> Samples:
        """Every current sample as plain data (what a scrape of ``/metrics`` would read), or
        only the sample ``names`` asked for: the alert evaluator reads a few families, and at
        10,000 endpoints collecting all of them every 15 s (``meshgen_endpoint_healthy``
        alone has a series per endpoint) stalled the event loop ~130 ms.

        The sorted label pairs of each series are made once and kept (``_pairs``): at 10,000
        endpoints rebuilding them on every evaluation blocked the event loop for ~80 ms."""
        out: Samples = {}
        cache = self._pairs
        if len(cache) > PAIRS_CACHE_SIZE:
            cache.clear()
        for name, rows in self._families():
            if names is not None and name not in names:
                continue
            label_names = _HELP[name][2]
            series = out.setdefault(name, {})
            for key, value in rows:
                pairs = cache.get((name, key))
                if pairs is None:
                    pairs = tuple(sorted(zip(label_names, (str(v) for v in key), strict=True)))
                    cache[(name, key)] = pairs
                series[pairs] = value
        if names is None or not names.isdisjoint(_HISTOGRAM_SAMPLES):
            for name, pairs, value in self._histogram_samples():
                if names is None or name in names:
                    ordered = cache.get((name, pairs))
                    if ordered is None:
                        ordered = cache[(name, pairs)] = tuple(sorted(pairs))
                    out.setdefault(name, {})[ordered] = value
        return out

    def render(self) -> str:
        """The Prometheus text exposition format 0.0.4, families sorted by name."""
        lines: list[str] = []
        rows_by_family = dict(self._families())
        prefixes = self._prefixes
        if len(prefixes) > PAIRS_CACHE_SIZE:
            prefixes.clear()
        for name in sorted(_HELP):
            kind, help_text, names = _HELP[name]
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "histogram":
                for sample, pairs, value in self._histogram_samples():
                    series = prefixes.get((sample, pairs))
                    if series is None:
                        series = prefixes[(sample, pairs)] = f"{sample}{_labels(pairs)}"
                    lines.append(f"{series} {format_value(value)}")
                continue
            for key, value in sorted(rows_by_family[name], key=lambda kv: _sort_key(kv[0])):
                series = prefixes.get((name, key))
                if series is None:
                    pairs = tuple(zip(names, (str(v) for v in key), strict=True))
                    series = prefixes[(name, key)] = f"{name}{_labels(pairs)}"
                lines.append(f"{series} {format_value(value)}")
        return "\n".join(lines) + "\n"


def _sort_key(key: tuple[object, ...]) -> tuple[str, ...]:
    return tuple(str(v) for v in key)


def _labels(pairs: LabelKey) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in pairs)
    return "{" + inner + "}"
