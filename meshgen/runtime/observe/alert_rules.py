"""The compiled alert and SLO rules: conditions, labels and the texts people read.

Both executors build their rules from here: :func:`compile_rules` turns the tables' alerts
and SLOs into :class:`Rule` checks for the embedded evaluator, and the Prometheus target
imports the same thresholds, windows and annotation texts (``format_duration``,
``burn_threshold``, ``alert_annotations``, ...) to write ``DIST/prometheus/rules.yml``, so
the two cannot drift apart. An SLO makes a ``<slo>-page`` and a ``<slo>-ticket`` rule, each
firing when both the long and the short window of any of its burn-rate pairs burn too fast.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..tables import Alert, BurnWindow, Slo
from .alert_signals import (
    DURATION_SIGNALS,
    RATIO_SIGNALS,
    SIGNAL_WINDOW_S,
    error_ratio,
    signal_value,
)
from .timeseries import Store

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


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
    """``summary`` (the user's, else the condition) and ``description`` of a user alert."""
    when = f"{alert.signal} {alert.op} {format_threshold(alert.signal, alert.threshold)}"
    description = f"{alert.service}: {when}" + (
        f" for {format_duration(alert.for_s)}" if alert.for_s else ""
    )
    return {"summary": alert.summary or description, "description": description}


def slo_annotations(slo: Slo, severity: str) -> dict[str, str]:
    """``summary`` and ``description`` of an SLO's ``page`` or ``ticket`` burn-rate alert."""
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
    """User alerts in order, then each SLO's page and ticket rules (if it has windows)."""
    rules = [_alert_rule(a) for a in alerts]
    for slo in slos:
        rules.extend(
            _slo_rule(slo, severity)
            for severity in ("page", "ticket")
            if (slo.page if severity == "page" else slo.ticket)
        )
    return rules
