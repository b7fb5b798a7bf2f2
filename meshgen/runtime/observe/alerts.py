"""Embedded alert evaluator: the compiled alert and SLO rules over the runtime's own metrics.

Theory of operation: every ``EVAL_INTERVAL_S`` (15 s) :meth:`AlertEvaluator.step` ingests one
``Metrics.collect()`` snapshot into a :class:`~.timeseries.Store` and evaluates every rule at
that instant, exactly as Prometheus evaluates ``DIST/prometheus/rules.yml`` (same windows,
same ``rate``/``histogram_quantile`` semantics, same thresholds: the rules come from
:mod:`.alert_rules`, the signals from :mod:`.alert_signals`, and the Prometheus target imports
both). A rule with a result becomes *pending*; it *fires* once it has had a result on every
evaluation for ``for``; a pending alert without a result is dropped and a firing one
*resolves*. No traffic yields no result (ratio and quantile signals have no sample when
nothing was requested), so it never fires.

Notifications follow Prometheus (see :mod:`.alertmanager`): newly firing and resolved alerts
are due at once, firing ones again every ``RESEND_S``, resolved ones until
``RESOLVED_RETENTION_S`` after they resolved. The rule and signal helpers are re-exported here.

The store also keeps ``SIGNAL_WINDOW_S`` of every service's request, latency and upstream
series (:data:`STATUS_SERIES`), alerted or not: the ``/status`` page reads its rates, error
ratios and p99 from the same store at :attr:`AlertEvaluator.evaluated_at`, so what a person sees
there is what the rules see.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..tables import Alert, Slo, Tables
from .alert_rules import (
    Rule,
    alert_annotations,
    burn_threshold,
    compile_rules,
    error_budget,
    format_duration,
    format_threshold,
    slo_annotations,
    slo_windows,
)
from .alert_signals import (
    BUCKETS,
    CERT_EXPIRY,
    DURATION_SIGNALS,
    HEALTHY,
    QUANTILES,
    RATIO_SIGNALS,
    REQUESTS,
    SIGNAL_WINDOW_S,
    UPSTREAM,
    error_ratio,
    signal_metric,
    signal_value,
)
from .alertmanager import RESEND_S, RESOLVED_RETENTION_S, iso, post_alerts, postable
from .metrics import Metrics, Samples
from .timeseries import Store

__all__ = [
    "BUCKETS",
    "CERT_EXPIRY",
    "DURATION_SIGNALS",
    "EVAL_INTERVAL_S",
    "HEALTHY",
    "QUANTILES",
    "RATIO_SIGNALS",
    "REQUESTS",
    "RESEND_S",
    "RESOLVED_RETENTION_S",
    "SIGNAL_WINDOW_S",
    "STATUS_SERIES",
    "UPSTREAM",
    "AlertEvaluator",
    "AlertState",
    "Rule",
    "alert_annotations",
    "burn_threshold",
    "compile_rules",
    "error_budget",
    "error_ratio",
    "format_duration",
    "format_threshold",
    "post_alerts",
    "signal_value",
    "slo_annotations",
    "slo_windows",
]

EVAL_INTERVAL_S: Final = 15.0
STATUS_SERIES: Final = frozenset({REQUESTS, BUCKETS, UPSTREAM})
"""Kept for every service (``SIGNAL_WINDOW_S``) for the status page."""


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
            "activeAt": iso(self.active_at),
            "value": None if math.isnan(self.value) else self.value,
        }

    def postable(self, now: float) -> dict[str, Any]:
        """The Alertmanager v2 ``PostableAlert`` for this alert."""
        return postable(
            dict(self.rule.labels),
            dict(self.rule.annotations),
            self.fired_at if self.fired_at is not None else self.active_at,
            self.resolved_at,
            now,
        )


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
    evaluated_at: float | None = field(init=False, default=None)
    wanted: frozenset[str] = field(init=False)
    """The sample names the rules and the status page read: all that ``run`` collects."""

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
            keep[(signal_metric(alert.signal), alert.service)] = SIGNAL_WINDOW_S
        for slo in self.slos:
            key = (REQUESTS, slo.service)
            keep[key] = max(keep.get(key, 0.0), *slo_windows(slo))
        self._keep = keep
        self.wanted = STATUS_SERIES | {name for name, _ in keep}

    def _retention(self, name: str, service: str) -> float | None:
        keep = self._keep.get((name, service))
        if keep is None and name in STATUS_SERIES:
            return SIGNAL_WINDOW_S
        return keep

    def step(self, now: float, samples: Samples) -> list[dict[str, Any]]:
        """Ingest a snapshot, evaluate every rule at ``now``; return alerts to notify."""
        now = round(now * 1000) / 1000
        self.store.ingest(now, samples)
        return self.evaluate(now)

    def evaluate(self, now: float) -> list[dict[str, Any]]:
        """Evaluate every rule at ``now`` over what the store holds; return alerts to notify."""
        self.evaluated_at = now
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
            now = round(self.clock() * 1000) / 1000
            samples = metrics.collect(self.wanted)
            for _ in self.store.ingest_in_slices(now, samples):
                await asyncio.sleep(0)  # let probes and requests run between slices
            due = self.evaluate(now)
            if due and self.alertmanager:
                await post_alerts(self.alertmanager, due)
            await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))
