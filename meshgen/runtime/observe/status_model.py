"""What the ``/status`` page says about each service and endpoint, as plain data (no HTML).

Theory of operation: an endpoint's state comes from every signal the runtime has, not from one:

* **active health** (``passing`` / ``failing`` / ``unchecked`` when the service has no check),
* **outlier ejection**,
* **recent tries**: ``meshgen_upstream_requests_total`` by outcome over the last
  ``SIGNAL_WINDOW_S`` (5m): the live counters minus the oldest sample the alert evaluator's
  store still holds in that window (0 when the series is younger than the window: counters
  start at 0), so a failure shows at once, not after the next evaluation.

The verdict is ``failing`` when the check fails, the endpoint is ejected, or every recent try
failed (connect failure, reset, timeout or 5xx); ``degraded`` when some recent tries failed;
``healthy`` when a check passes or tries succeed; ``unknown`` when nothing has been heard of it
(no check, no traffic). So a service without a health check whose endpoints refuse
connections reads "0 of 2 serving", never "healthy 2/2".

Service rates (request rate, 5xx share, p99) and SLO error ratios are the alert signals
(:mod:`.alert_signals`) evaluated on the evaluator's store at its last evaluation: the same
numbers the alert rules compare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..tables import Cluster, Slo, StaticDiscovery, Tables
from .alert_rules import error_budget, slo_windows
from .alert_signals import SIGNAL_WINDOW_S, UPSTREAM, error_ratio, signal_value
from .metrics import Metrics
from .timeseries import Store, label

FAILED_OUTCOMES: Final = frozenset({"connect-failure", "reset", "timeout"})
EVAL_SLACK_S: Final = 22.5
"""1.5 evaluation intervals: a series whose oldest kept sample is later than the window start
by more than this was born inside the window (its baseline is 0)."""
BURN_WINDOW_S: Final = 3600.0


def is_failed(outcome: str) -> bool:
    """A try outcome that counts against the endpoint: no answer, or a 5xx answer."""
    return outcome in FAILED_OUTCOMES or (len(outcome) == 3 and outcome.startswith("5"))


@dataclass
class EndpointView:
    address: str
    zone: str | None
    weight: int
    labels: dict[str, str]
    health: str  # passing | failing | unchecked
    ejected: bool
    in_flight: int
    tries: int = 0  # in the last 5m
    failures: dict[str, int] = field(default_factory=dict)  # outcome -> count, failed ones only

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def verdict(self) -> str:
        if self.health == "failing" or self.ejected or (self.tries and self.failed == self.tries):
            return "failing"
        if self.failed:
            return "degraded"
        if self.health == "passing" or self.tries:
            return "healthy"
        return "unknown"


@dataclass
class SloView:
    slo: Slo
    budget: float  # allowed error ratio
    history_s: float  # the longest window the runtime keeps for it
    error_ratio: float | None  # over history_s
    burn_rate_1h: float | None

    @property
    def budget_remaining(self) -> float | None:
        if self.error_ratio is None or self.budget <= 0:
            return None
        return 1.0 - self.error_ratio / self.budget


@dataclass
class ServiceView:
    cluster: Cluster
    endpoints: list[EndpointView]
    discovery: Mapping[str, Any]
    circuit_open: bool
    retries: int
    request_rate: float | None
    error_rate: float | None
    p99_s: float | None
    slos: list[SloView]

    def count(self, *verdicts: str) -> int:
        return sum(1 for e in self.endpoints if e.verdict in verdicts)


def _static_endpoints(cluster: Cluster) -> list[dict[str, Any]]:
    """Endpoints known before the upstreams started (static ones): nothing heard yet."""
    if not isinstance(cluster.discovery, StaticDiscovery):
        return []
    return [
        {
            "address": e.address,
            "zone": e.zone,
            "weight": e.weight,
            "labels": dict(e.labels),
            "health": "unchecked",
            "ejected": False,
            "in_flight": 0,
        }
        for e in cluster.discovery.endpoints
    ]


def recent_outcomes(
    store: Store | None, metrics: Metrics, service: str, now: float
) -> dict[str, dict[str, int]]:
    """endpoint -> outcome -> tries in the last ``SIGNAL_WINDOW_S``, live counters included."""
    start = now - SIGNAL_WINDOW_S
    baseline: dict[tuple[str, str], float] = {}
    if store is not None:
        for labels, series in store.select(UPSTREAM, service):
            i, j = series.bounds(start, now)
            if j > i and series.t[i] - start <= EVAL_SLACK_S:
                baseline[(label(labels, "endpoint"), label(labels, "code"))] = series.v[i]
    out: dict[str, dict[str, int]] = {}
    for (svc, endpoint, code), value in metrics.upstream_requests.items():
        if svc != service:
            continue
        seen = value - baseline.get((endpoint, str(code)), 0.0)
        if seen > 0:
            by_code = out.setdefault(endpoint, {})
            by_code[str(code)] = by_code.get(str(code), 0) + int(seen)
    return out


def _slo_view(slo: Slo, store: Store | None, at: float | None) -> SloView:
    history = max(slo_windows(slo))
    ratio = burn = None
    if store is not None and at is not None:
        ratio = error_ratio(store, slo.service, at, history)
        hour = error_ratio(store, slo.service, at, BURN_WINDOW_S)
        budget = error_budget(slo)
        burn = None if hour is None or budget <= 0 else hour / budget
    return SloView(slo, error_budget(slo), history, ratio, burn)


def _signal(store: Store | None, at: float | None, service: str, name: str) -> float | None:
    if store is None or at is None:
        return None
    value = signal_value(store, service, name, at)
    return None if value is None or math.isnan(value) else value


def service_views(
    tables: Tables,
    snapshot: Mapping[str, Any],
    metrics: Metrics,
    store: Store | None,
    evaluated_at: float | None,
    now: float,
) -> list[ServiceView]:
    """One view per service of ``tables``, in table order."""
    views = []
    for cluster in tables.clusters:
        name = cluster.name
        state = snapshot.get(name, {})
        raw = state.get("endpoints")
        recent = recent_outcomes(store, metrics, name, now)
        endpoints = []
        for ep in raw if raw is not None else _static_endpoints(cluster):
            address = str(ep.get("address", ""))
            outcomes = recent.get(address, {})
            endpoints.append(
                EndpointView(
                    address=address,
                    zone=ep.get("zone"),
                    weight=int(ep.get("weight", 1)),
                    labels=dict(ep.get("labels") or {}),
                    health=str(ep.get("health", "unchecked")),
                    ejected=bool(ep.get("ejected")),
                    in_flight=int(ep.get("in_flight", 0)),
                    tries=sum(outcomes.values()),
                    failures={k: v for k, v in sorted(outcomes.items()) if is_failed(k)},
                )
            )
        views.append(
            ServiceView(
                cluster=cluster,
                endpoints=endpoints,
                discovery=state.get("discovery", {}),
                circuit_open=bool(metrics.circuit_open.get((name,), 0)),
                retries=metrics.retries.get((name,), 0),
                request_rate=_signal(store, evaluated_at, name, "request_rate"),
                error_rate=_signal(store, evaluated_at, name, "error_rate"),
                p99_s=_signal(store, evaluated_at, name, "p99_latency"),
                slos=[_slo_view(s, store, evaluated_at) for s in tables.slos if s.service == name],
            )
        )
    return views
