"""Prometheus target: ``DIST/prometheus/rules.yml`` with the alerts and SLOs as PromQL.

Naming scheme (docs/monitoring.md): group ``meshgen-alerts`` holds the user alerts; each SLO
gets group ``meshgen-slo-<slo>`` with its SLI recordings ``meshgen_slo:sli_error:ratio_rate<W>``
(label ``slo``, ``service``) followed by the alerts ``<slo>-page`` / ``<slo>-ticket``; group
``meshgen-slo-meta`` records ``meshgen_slo:objective:ratio``, ``meshgen_slo:error_budget:ratio``,
``meshgen_slo:sli_error:ratio_period`` and ``meshgen_slo:error_budget_remaining:ratio``.
Every alert carries labels ``service`` and ``severity``. Thresholds, windows and texts come
from ``meshgen.runtime.observe.alerts``, the embedded evaluator, so both executors share one source.

The rules read one set of metric names (:mod:`.metric_names`): the runtime's ``meshgen_*``
series (per request, after retries) for ``rules.yml``; Envoy's cluster series (per try) for
the Envoy target's ``rules.envoy.yml``, which says so in every traffic rule (``counts``).
"""

from __future__ import annotations

import json
from typing import Any

from meshgen.runtime.observe.alerts import (
    QUANTILES,
    SIGNAL_WINDOW_S,
    alert_annotations,
    burn_threshold,
    error_budget,
    format_duration,
    slo_annotations,
    slo_windows,
)
from meshgen.runtime.tables import Alert, Slo, Tables

from . import RenderContext
from .metric_names import RUNTIME, Metrics

TRAFFIC = frozenset({"error_rate", "request_rate", *QUANTILES})
"""Signals read from the request counters and histogram (what ``Metrics.counts`` is about)."""

INTERVAL = format_duration(15.0)
META_INTERVAL = "1m"  # the 30d budget recordings are heavy and nobody pages on them
SLI = "meshgen_slo:sli_error:ratio_rate"


def _q(value: str) -> str:
    """A PromQL string literal (JSON escaping is a subset of PromQL's Go-style escapes)."""
    return json.dumps(value)


def _num(value: float) -> str:
    return repr(float(value))


def error_ratio_expr(service: str, window: str, m: Metrics = RUNTIME) -> str:
    """Error share of the service's responses (5xx, and gRPC errors where the engine counts
    them: :meth:`Metrics.error_sum`); no sample when there was no traffic."""
    _, sel = m.matchers(service)
    responses = m.responses.format(sel=sel)
    return f"({m.error_sum(sel, window)} or vector(0)) / (sum(rate({responses}[{window}])) > 0)"


def signal_expr(alert: Alert, m: Metrics = RUNTIME) -> str:
    """PromQL for the alert's signal (docs/reference.md, Monitoring), before the comparison."""
    window = format_duration(SIGNAL_WINDOW_S)
    sel, traffic = m.matchers(alert.service)
    signal = alert.signal
    if signal == "error_rate":
        return f"({error_ratio_expr(alert.service, window, m)})"
    if signal == "request_rate":
        return f"sum(rate({m.requests.format(sel=traffic)}[{window}]))"
    if signal in QUANTILES:
        rates = f"rate({m.buckets.format(sel=traffic)}[{window}])"
        return f"histogram_quantile({_num(QUANTILES[signal])}, sum by (le) ({rates})){m.seconds}"
    if signal == "healthy_endpoints":
        return f"sum({m.healthy.format(sel=sel)})"
    if signal == "healthy_ratio":
        return m.healthy_ratio(sel)
    if signal == "cert_expiry":
        return f"(min({m.cert_expiry.format(sel=sel)}) - time())"
    raise ValueError(f"unknown signal {signal!r}")


def yaml_scalar(text: str) -> str:
    """A YAML scalar for ``text``: single-quoted (PromQL stays readable) when every character
    is printable, else double-quoted with ``\\uXXXX`` / ``\\UXXXXXXXX`` escapes."""
    if text.isprintable():
        return "'" + text.replace("'", "''") + "'"
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _template_safe(text: str) -> str:
    """Annotations are Go templates in Prometheus: keep a user's ``{{`` literal."""
    return text.replace("{{", '{{ "{{" }}')


def _annotations(values: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, _template_safe(v)) for k, v in sorted(values.items())]


def _alert_rule(alert: Alert, m: Metrics) -> dict[str, Any]:
    notes = alert_annotations(alert)
    if m.counts and alert.signal in TRAFFIC:
        notes = {**notes, "counts": m.counts}
    return {
        "kind": "alert",
        "name": alert.name,
        "expr": f"{signal_expr(alert, m)} {alert.op} {_num(alert.threshold)}",
        "for": format_duration(alert.for_s) if alert.for_s else None,
        "labels": [("service", alert.service), ("severity", alert.severity)],
        "annotations": _annotations(notes),
    }


def _slo_group(slo: Slo, m: Metrics) -> dict[str, Any]:
    labels = [("service", slo.service), ("slo", slo.name)]
    rules: list[dict[str, Any]] = [
        {
            "kind": "record",
            "name": SLI + format_duration(w),
            "expr": error_ratio_expr(slo.service, format_duration(w), m),
            "for": None,
            "labels": labels,
            "annotations": [],
        }
        for w in slo_windows(slo)
    ]
    for severity, windows in (("page", slo.page), ("ticket", slo.ticket)):
        if not windows:
            continue
        pairs = []
        for w in windows:
            threshold = _num(burn_threshold(slo, w))
            long_sel = f"{SLI}{format_duration(w.long_s)}{{slo={_q(slo.name)}}}"
            short_sel = f"{SLI}{format_duration(w.short_s)}{{slo={_q(slo.name)}}}"
            pairs.append(f"({long_sel} > {threshold} and {short_sel} > {threshold})")
        rules.append(
            {
                "kind": "alert",
                "name": f"{slo.name}-{severity}",
                "expr": " or ".join(pairs),
                "for": None,
                "labels": [("service", slo.service), ("severity", severity), ("slo", slo.name)],
                "annotations": _annotations(
                    {**slo_annotations(slo, severity), **({"counts": m.counts} if m.counts else {})}
                ),
            }
        )
    return {"name": f"meshgen-slo-{slo.name}", "interval": INTERVAL, "rules": rules}


def _meta_rules(slo: Slo) -> list[dict[str, Any]]:
    labels = [("service", slo.service), ("slo", slo.name)]
    sel = f"{{slo={_q(slo.name)}}}"
    period = format_duration(slo.window_s)
    five = format_duration(SIGNAL_WINDOW_S)
    exprs = [
        ("meshgen_slo:objective:ratio", f"vector({_num(round(slo.objective / 100, 12))})"),
        ("meshgen_slo:error_budget:ratio", f"vector({_num(error_budget(slo))})"),
        ("meshgen_slo:sli_error:ratio_period", f"avg_over_time({SLI}{five}{sel}[{period}])"),
        (
            "meshgen_slo:error_budget_remaining:ratio",
            f"1 - meshgen_slo:sli_error:ratio_period{sel} / meshgen_slo:error_budget:ratio{sel}",
        ),
    ]
    return [
        {"kind": "record", "name": n, "expr": e, "for": None, "labels": labels, "annotations": []}
        for n, e in exprs
    ]


def groups(tables: Tables, m: Metrics = RUNTIME) -> list[dict[str, Any]]:
    """Rule groups in a stable order: user alerts, one group per SLO, then SLO metadata."""
    out: list[dict[str, Any]] = []
    if tables.alerts:
        rules = [_alert_rule(a, m) for a in tables.alerts]
        out.append({"name": "meshgen-alerts", "interval": INTERVAL, "rules": rules})
    out.extend(_slo_group(slo, m) for slo in tables.slos)
    if tables.slos:
        meta = [rule for slo in tables.slos for rule in _meta_rules(slo)]
        out.append({"name": "meshgen-slo-meta", "interval": META_INTERVAL, "rules": meta})
    return out


def rules_text(tables: Tables, ctx: RenderContext, m: Metrics = RUNTIME) -> str:
    """A rules file on ``m``'s series; always written, empty groups when nothing is set."""
    template = ctx.env.get_template("prometheus/rules.yml.j2")
    return template.render(
        header=ctx.header, groups=groups(tables, m), q=yaml_scalar, engine=m.engine, counts=m.counts
    )


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """``{"prometheus/rules.yml": text}`` on the runtime's series."""
    return {"prometheus/rules.yml": rules_text(tables, ctx)}
