"""Embedded alert evaluator: the compiled alert and SLO rules over the runtime's own metrics.

Theory of operation: every ``EVAL_INTERVAL_S`` (15 s) :meth:`AlertEvaluator.step` ingests one
``Metrics.collect()`` snapshot into a :class:`~.timeseries.Store` and evaluates every rule at
that instant, exactly as Prometheus evaluates ``DIST/prometheus/rules.yml`` (same windows,
same ``rate``/``histogram_quantile`` semantics, same thresholds: both come from the helpers
below, which the Prometheus target imports). A rule with a result becomes *pending*; it
*fires* once it has had a result on every evaluation for ``for``; a pending alert without a
result is dropped and a firing one *resolves*. No traffic yields no result (ratio and
quantile signals have no sample when nothing was requested), so it never fires.

Alertmanager (``/api/v2/alerts``): newly firing and resolved alerts are sent at once, firing
ones again every ``RESEND_S`` with ``endsAt`` in the future; resolved ones carry the resolution
time as ``endsAt`` and are resent for ``RESOLVED_RETENTION_S``, as Prometheus does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import operator
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .metrics import Metrics, Samples
from .tables import Alert, BurnWindow, Slo, Tables
from .timeseries import Store, histogram_quantile, label, parse_le

log = logging.getLogger("meshgen.alerts")

EVAL_INTERVAL_S = 15.0
SIGNAL_WINDOW_S = 300.0
RESEND_S = 60.0
RESOLVED_RETENTION_S = 900.0
REQUESTS = "meshgen_requests_total"
BUCKETS = "meshgen_request_duration_seconds_bucket"
HEALTHY = "meshgen_endpoint_healthy"
CERT_EXPIRY = "meshgen_cert_expiry_timestamp_seconds"
QUANTILES = {"p50_latency": 0.5, "p90_latency": 0.9, "p99_latency": 0.99}
RATIO_SIGNALS = frozenset({"error_rate", "healthy_ratio"})
DURATION_SIGNALS = frozenset({*QUANTILES, "cert_expiry"})
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


# --- shared with the Prometheus target (one source of truth for both executors) ----------
def format_duration(seconds: float) -> str:
    """Prometheus duration with the largest exact unit: 300 -> ``5m``, 86400 -> ``1d``."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def format_threshold(signal: str, value: float) -> str:
    """A threshold as a person writes it in ``when``: ``5%``, ``250ms``, ``12/s``, ``2``."""
    if signal in RATIO_SIGNALS:
        return f"{value * 100:g}%"
    if signal in DURATION_SIGNALS:
        return format_duration(value)
    if signal == "request_rate":
        return f"{value:g}/s"
    return f"{value:g}"


def error_budget(slo: Slo) -> float:
    """Allowed error ratio: 99.9 -> 0.001 (rounded so the generated rules read cleanly)."""
    return round((100 - slo.objective) / 100, 12)


def burn_threshold(slo: Slo, window: BurnWindow) -> float:
    """Error ratio above which ``window`` burns the budget too fast: factor x budget."""
    return round(window.factor * error_budget(slo), 12)


def alert_annotations(alert: Alert) -> dict[str, str]:
    when = f"{alert.signal} {alert.op} {format_threshold(alert.signal, alert.threshold)}"
    description = f"{alert.service}: {when}" + (
        f" for {format_duration(alert.for_s)}" if alert.for_s else ""
    )
    return {"summary": alert.summary or description, "description": description}


def slo_annotations(slo: Slo, severity: str) -> dict[str, str]:
    windows = slo.page if severity == "page" else slo.ticket
    pairs = " or ".join(
        f"{format_duration(w.long_s)}&{format_duration(w.short_s)} at {w.factor:g}x"
        for w in windows
    )
    return {
        "summary": f"{slo.service} is burning the error budget of SLO {slo.name} too fast",
        "description": (
            f"{slo.name}: objective {slo.objective:g}% over {format_duration(slo.window_s)}; "
            f"5xx ratio above the burn-rate threshold on {pairs}"
        ),
    }


def slo_windows(slo: Slo) -> list[float]:
    """Every SLI window an SLO needs (5m included for the budget-remaining recording)."""
    found = {SIGNAL_WINDOW_S}
    for window in (*slo.page, *slo.ticket):
        found.update((window.long_s, window.short_s))
    return sorted(found)


# --- signals --------------------------------------------------------------------------
def _sum_rate(
    store: Store, service: str, now: float, range_s: float, only_5xx: bool
) -> float | None:
    total: float | None = None
    for labels, series in store.select(REQUESTS, service):
        if only_5xx:
            code = label(labels, "code")
            if len(code) != 3 or code[0] != "5" or "\n" in code:
                continue
        rate = series.rate(now, range_s)
        if rate is not None:
            total = rate if total is None else total + rate
    return total


def error_ratio(store: Store, service: str, now: float, range_s: float) -> float | None:
    """``(sum(rate(5xx)) or vector(0)) / (sum(rate(all)) > 0)``."""
    requests = _sum_rate(store, service, now, range_s, only_5xx=False)
    if requests is None or not requests > 0:
        return None
    errors = _sum_rate(store, service, now, range_s, only_5xx=True)
    return (errors or 0.0) / requests


def _gauges(store: Store, name: str, service: str, now: float) -> list[float]:
    values = (series.latest(now) for _, series in store.select(name, service))
    return [v for v in values if v is not None]


def signal_value(store: Store, service: str, signal: str, now: float) -> float | None:
    """The signal's value at ``now``, or None when PromQL would return no sample."""
    if signal == "error_rate":
        return error_ratio(store, service, now, SIGNAL_WINDOW_S)
    if signal == "request_rate":
        return _sum_rate(store, service, now, SIGNAL_WINDOW_S, only_5xx=False)
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


# --- rules and their state --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting rule; ``check`` returns the value when the condition holds, else None."""

    name: str
    labels: tuple[tuple[str, str], ...]  # alertname first, then sorted
    annotations: tuple[tuple[str, str], ...]
    for_s: float
    check: Callable[[Store, float], float | None]


def _alert_rule(alert: Alert) -> Rule:
    compare = _OPS[alert.op]

    def check(store: Store, now: float) -> float | None:
        value = signal_value(store, alert.service, alert.signal, now)
        return value if value is not None and compare(value, alert.threshold) else None

    labels = (("service", alert.service), ("severity", alert.severity))
    return Rule(
        alert.name,
        (("alertname", alert.name), *labels),
        tuple(sorted(alert_annotations(alert).items())),
        alert.for_s,
        check,
    )


def _slo_rule(slo: Slo, severity: str) -> Rule:
    windows = [
        (w.long_s, w.short_s, burn_threshold(slo, w))
        for w in (slo.page if severity == "page" else slo.ticket)
    ]

    def check(store: Store, now: float) -> float | None:
        for long_s, short_s, threshold in windows:
            long_ratio = error_ratio(store, slo.service, now, long_s)
            short_ratio = error_ratio(store, slo.service, now, short_s)
            if (
                long_ratio is not None
                and long_ratio > threshold
                and short_ratio is not None
                and short_ratio > threshold
            ):
                return long_ratio
        return None

    name = f"{slo.name}-{severity}"
    labels = (("service", slo.service), ("severity", severity), ("slo", slo.name))
    return Rule(
        name,
        (("alertname", name), *labels),
        tuple(sorted(slo_annotations(slo, severity).items())),
        0.0,
        check,
    )


def compile_rules(alerts: Sequence[Alert], slos: Sequence[Slo]) -> list[Rule]:
    rules = [_alert_rule(a) for a in alerts]
    for slo in slos:
        rules.extend(
            _slo_rule(slo, severity)
            for severity in ("page", "ticket")
            if (slo.page if severity == "page" else slo.ticket)
        )
    return rules


@dataclass(slots=True)
class AlertState:
    rule: Rule
    state: str  # "pending" | "firing" | "resolved"
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    sent_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "labels": dict(self.rule.labels),
            "annotations": dict(self.rule.annotations),
            "state": self.state,
            "activeAt": _iso(self.active_at),
            "value": None if math.isnan(self.value) else self.value,
        }

    def postable(self, now: float) -> dict[str, Any]:
        """The Alertmanager v2 ``PostableAlert`` for this alert."""
        ends = self.resolved_at if self.resolved_at is not None else now + 4 * RESEND_S
        return {
            "labels": dict(self.rule.labels),
            "annotations": dict(self.rule.annotations),
            "startsAt": _iso(self.fired_at if self.fired_at is not None else self.active_at),
            "endsAt": _iso(ends),
            "generatorURL": "",
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class AlertEvaluator:
    """Holds the rules, the sample store and each alert's state; ``clock`` is wall time."""

    alerts: Sequence[Alert] = ()
    slos: Sequence[Slo] = ()
    alertmanager: str | None = None
    clock: Callable[[], float] = time.time
    rules: list[Rule] = field(init=False)
    store: Store = field(init=False)
    states: dict[str, AlertState] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.update_rules(self.alerts, self.slos, self.alertmanager)
        self.store = Store(self._retention)

    @classmethod
    def from_tables(
        cls, tables: Tables, *, clock: Callable[[], float] = time.time
    ) -> AlertEvaluator:
        return cls(tables.alerts, tables.slos, tables.mesh.alertmanager, clock)

    def update_rules(
        self, alerts: Sequence[Alert], slos: Sequence[Slo], alertmanager: str | None = None
    ) -> None:
        """Swap in new rules and receiver (reload); alerts whose rule name survives keep
        their state. ``alertmanager=None`` stops notifications, as in the new tables."""
        self.alerts, self.slos = tuple(alerts), tuple(slos)
        self.alertmanager = alertmanager
        self.rules = compile_rules(self.alerts, self.slos)
        names = {rule.name for rule in self.rules}
        self.states = {k: v for k, v in self.states.items() if k in names}
        keep: dict[tuple[str, str], float] = {}
        for alert in self.alerts:
            name = {
                "error_rate": REQUESTS,
                "request_rate": REQUESTS,
                "healthy_endpoints": HEALTHY,
                "healthy_ratio": HEALTHY,
                "cert_expiry": CERT_EXPIRY,
            }.get(alert.signal, BUCKETS)
            keep[(name, alert.service)] = SIGNAL_WINDOW_S
        for slo in self.slos:
            key = (REQUESTS, slo.service)
            keep[key] = max(keep.get(key, 0.0), *slo_windows(slo))
        self._keep = keep

    def _retention(self, name: str, service: str) -> float | None:
        return self._keep.get((name, service))

    def step(self, now: float, samples: Samples) -> list[dict[str, Any]]:
        """Ingest a snapshot, evaluate every rule at ``now``; return alerts to notify."""
        now = round(now * 1000) / 1000
        self.store.ingest(now, samples)
        for rule in self.rules:
            value = rule.check(self.store, now)
            current = self.states.get(rule.name)
            if value is not None:
                if current is None or current.state == "resolved":
                    current = self.states[rule.name] = AlertState(rule, "pending", now, value)
                current.value = value
                if current.state == "pending" and now - current.active_at >= rule.for_s:
                    current.state, current.fired_at = "firing", now
            elif current is not None and current.state == "pending":
                del self.states[rule.name]
            elif current is not None and current.state == "firing":
                current.state, current.resolved_at = "resolved", now
        return self._due(now)

    def _due(self, now: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, st in list(self.states.items()):
            if (
                st.state == "resolved"
                and st.resolved_at is not None
                and now - st.resolved_at > RESOLVED_RETENTION_S
            ):
                del self.states[name]
                continue
            if st.state == "pending":
                continue
            last = st.sent_at
            just_resolved = (
                st.state == "resolved" and last is not None and last < (st.resolved_at or 0.0)
            )
            if last is None or just_resolved or now - last >= RESEND_S:
                st.sent_at = now
                out.append(st.postable(now))
        return out

    def firing(self) -> list[dict[str, Any]]:
        """Active (pending and firing) alerts as JSON, for ``/alerts`` and ``/status``."""
        return [
            st.as_json()
            for st in sorted(self.states.values(), key=lambda s: s.rule.name)
            if st.state != "resolved"
        ]

    async def run(self, metrics: Metrics, interval_s: float = EVAL_INTERVAL_S) -> None:
        """Evaluate forever every ``interval_s``; cancel the task to stop."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            due = self.step(self.clock(), metrics.collect())
            if due and self.alertmanager:
                await post_alerts(self.alertmanager, due)
            await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))


async def post_alerts(base_url: str, alerts: list[dict[str, Any]], timeout_s: float = 5.0) -> bool:
    """POST to ``BASE/api/v2/alerts``; failures are logged, never raised (retried on resend)."""
    url = base_url.rstrip("/") + "/api/v2/alerts"
    body = json.dumps(alerts).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )

    def send() -> int:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)

    try:
        status = await asyncio.to_thread(send)
    except OSError as exc:
        log.warning("alertmanager %s: %s", url, exc)
        return False
    return 200 <= status < 300
