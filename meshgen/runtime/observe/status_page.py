"""The admin ``/status`` page: one HTML document a person reads at a glance.

Sections: active alerts; routes (listeners, match, weighted split, mirror, redirect); then per
service its endpoints' verdicts ("0 of 2 serving"), request rate, 5xx share and p99 over 5m,
circuit and discovery state, SLO error budgets, and one row per endpoint with every signal that
went into its verdict (see :mod:`.status_model`). Every value goes through ``html.escape``; rows
carry ``data-*`` attributes for tests. The page refreshes itself every 5 s (no script).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..tables import Match, Route, StaticDiscovery, Tables
from .alert_rules import format_duration
from .alerts import AlertEvaluator
from .metrics import Metrics
from .status_model import EndpointView, ServiceView, SloView, service_views

REFRESH_S: Final = 5

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40em;margin-bottom:.6em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee} .ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600}
.warn{color:#9a6700;font-weight:600} .muted{color:#777} nav a{margin-right:1em}
"""
_VERDICT_CLASS = {"healthy": "ok", "failing": "bad", "degraded": "warn", "unknown": "muted"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _span(cls: str, text: object) -> str:
    return f'<span class="{cls}">{_e(text)}</span>'


def _flag(good: bool, yes: str, no: str) -> str:
    return _span("ok" if good else "bad", yes if good else no)


def _row(cells: Iterable[str], attrs: str = "") -> str:
    return f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _head(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.3g}%"


def _alerts_section(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<h2>Alerts</h2><p id="alerts" data-firing="0" class="ok">No active alerts.</p>'
    rows = []
    for alert in alerts:
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        state = str(alert.get("state", ""))
        attrs = f' data-alert="{_e(labels.get("alertname", ""))}" data-state="{_e(state)}"'
        cells = [
            _e(labels.get("alertname", "")),
            _e(labels.get("service", "")),
            _e(labels.get("severity", "")),
            _span("bad" if state == "firing" else "warn", state),
            _e(alert.get("activeAt", "")),
            _e(annotations.get("summary", "")),
        ]
        rows.append(_row(cells, attrs))
    firing = sum(1 for a in alerts if a.get("state") == "firing")
    head = _head("alert", "service", "severity", "state", "since", "summary")
    return f'<h2>Alerts</h2><table id="alerts" data-firing="{firing}">{head}{"".join(rows)}</table>'


def _match_text(match: Match) -> str:
    parts = []
    if match.hosts:
        parts.append("host " + " | ".join(match.hosts))
    if match.path_kind != "prefix" or match.path not in ("", "/"):
        parts.append(f"path {match.path_kind} {match.path}")
    if match.methods:
        parts.append(" ".join(match.methods))
    parts.extend(f"header {h.name} {h.kind} {h.value}".rstrip() for h in match.headers)
    return ", ".join(parts) or "every request"


def _route_row(route: Route, listeners: list[str]) -> str:
    if route.redirect is not None:
        split = f"redirect {route.redirect.status} → {_e(route.redirect.location)}"
    else:
        split = "<br>".join(
            f"{_e(t.service)}{'/' + _e(t.subset) if t.subset else ''} {t.weight}%" for t in route.to
        )
    extras = []
    if route.mirror is not None:
        target = route.mirror.service + (f"/{route.mirror.subset}" if route.mirror.subset else "")
        extras.append(f"mirror {target} {route.mirror.percent:g}%")
    if route.rate_limit is not None:
        extras.append(f"rate limit {route.rate_limit.requests_per_second:g}/s")
    if route.fault is not None:
        extras.append("fault injection")
    cells = [
        _e(route.name),
        _e(", ".join(listeners) or "-"),
        _e(_match_text(route.match)),
        split,
        _e("; ".join(extras) or "-"),
    ]
    return _row(cells, f' data-route="{_e(route.name)}"')


def _routes_section(tables: Tables) -> str:
    served: dict[str, list[str]] = {}
    for lst in tables.listeners:
        for name in lst.routes:
            served.setdefault(name, []).append(lst.name)
    rows = "".join(_route_row(r, served.get(r.name, [])) for r in tables.routes)
    body = rows or '<tr><td colspan="5" class="muted">no routes</td></tr>'
    head = _head("route", "listeners", "match", "split", "also")
    return f'<h2>Routes</h2><p class="muted">tried in this order; the first match wins</p>' \
           f'<table id="routes">{head}{body}</table>'  # fmt: skip


def _endpoint_row(ep: EndpointView, ejections: int) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(ep.labels.items()))
    failures = ", ".join(f"{k} {v}" for k, v in ep.failures.items())
    verdict = ep.verdict
    attrs = (f' data-endpoint="{_e(ep.address)}" data-verdict="{verdict}"'
             f' data-health="{_e(ep.health)}" data-ejected="{str(ep.ejected).lower()}"'
             f' data-failed="{ep.failed}" data-tries="{ep.tries}"')  # fmt: skip
    health_class = {"passing": "ok", "failing": "bad"}.get(ep.health, "muted")
    cells = [
        _e(ep.address),
        _span(_VERDICT_CLASS[verdict], verdict),
        _span(health_class, ep.health),
        _flag(not ep.ejected, "no", "ejected"),
        _e(ejections),
        _e(ep.tries),
        _span("bad", failures) if failures else _e("-"),
        _e(ep.in_flight),
        _e(ep.zone or "-"),
        _e(ep.weight),
        _e(labels or "-"),
    ]
    return _row(cells, attrs)


def _slo_rows(slos: list[SloView]) -> str:
    if not slos:
        return ""
    rows = []
    for view in slos:
        left = view.budget_remaining
        left_text = "n/a" if left is None else f"{left * 100:.1f}%"
        cls = "muted" if left is None else ("bad" if left < 0 else "warn" if left < 0.25 else "ok")
        burn = "n/a" if view.burn_rate_1h is None else f"{view.burn_rate_1h:.2g}x"
        cells = [
            _e(view.slo.name),
            _e(f"{view.slo.objective:g}% over {format_duration(view.slo.window_s)}"),
            _e(_percent(view.budget)),
            _e(_percent(view.error_ratio)),
            _span(cls, left_text),
            _e(burn),
        ]
        kept = "" if left is None else repr(left)
        rows.append(_row(cells, f' data-slo="{_e(view.slo.name)}" data-budget-left="{kept}"'))
    head = _head("SLO", "objective", "error budget", "5xx share", "budget left", "burn 1h")
    kept = format_duration(max(v.history_s for v in slos))
    note = (f'<p class="muted">5xx share and budget over the last {kept} the runtime keeps '
            "(of the SLO window); Prometheus' rules.yml covers the whole window</p>")  # fmt: skip
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _service_section(view: ServiceView, metrics: Metrics) -> str:
    name = view.cluster.name
    total = len(view.endpoints)
    serving = view.count("healthy", "degraded")
    failing = view.count("failing")
    if isinstance(view.cluster.discovery, StaticDiscovery):
        found = "static"
    else:
        found = f"dns {_e(view.cluster.discovery.query_name)} " + _flag(
            bool(view.discovery.get("ok", True)), "ok", "failing"
        )
        if view.discovery.get("last_error"):
            found += f' <span class="muted">{_e(view.discovery["last_error"])}</span>'
    p99 = "n/a" if view.p99_s is None else format_duration(round(view.p99_s, 3) or 0.001)
    rate = "n/a" if view.request_rate is None else f"{view.request_rate:.3g}/s"
    cls = "ok" if serving == total and total else ("bad" if serving == 0 else "warn")
    facts = [
        _span(cls, f"{serving} of {total} serving") + (f" ({failing} failing)" if failing else ""),
        f"requests {rate}",
        f"5xx {_e(_percent(view.error_rate))}",
        f"p99 {_e(p99)}",
        "circuit " + _flag(not view.circuit_open, "closed", "open"),
        f"discovery {found}",
        f"retries {view.retries}",
    ]
    backup = view.cluster.failover.backup
    if backup:
        facts.append(f"backup {_e(backup)}")
    head = _head("endpoint", "state", "health check", "ejected", "ejections", "tries 5m",
                 "failed 5m", "in flight", "zone", "weight", "labels")  # fmt: skip
    rows = "".join(
        _endpoint_row(ep, metrics.ejections.get((name, ep.address), 0)) for ep in view.endpoints
    )
    body = rows or '<tr><td colspan="11" class="muted">no endpoints</td></tr>'
    measured = {"request-rate": view.request_rate, "error-rate": view.error_rate, "p99": view.p99_s}
    numbers = "".join(f' data-{k}="{"" if v is None else repr(v)}"' for k, v in measured.items())
    attrs = (f' id="service-{_e(name)}" data-service="{_e(name)}" data-serving="{serving}"'
             f' data-total="{total}" data-failing="{failing}"{numbers}'
             f' data-circuit="{"open" if view.circuit_open else "closed"}"')  # fmt: skip
    return (
        f"<section{attrs}><h2>{_e(name)}</h2><p>{' &middot; '.join(facts)}</p>"
        f"<table>{head}{body}</table>{_slo_rows(view.slos)}</section>"
    )


def render_status(
    tables: Tables,
    snapshot: Mapping[str, Any],
    metrics: Metrics,
    evaluator: AlertEvaluator | None,
    now: float,
) -> str:
    """The whole page as a string; ``now`` is wall time (the evaluator's clock)."""
    store = evaluator.store if evaluator is not None else None
    at = evaluator.evaluated_at if evaluator is not None else None
    views = service_views(tables, snapshot, metrics, store, at, now)
    services = "".join(_service_section(v, metrics) for v in views)
    alerts = evaluator.firing() if evaluator is not None else []
    links = "".join(f'<a href="/{p}">/{p}</a>' for p in ("metrics", "config", "alerts", "healthz"))
    measured = "rates over 5m, updated every 15 s" if at is not None else "rates: not measured yet"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>meshgen {_e(tables.mesh.name)} status</title><style>{_STYLE}</style></head>"
        f"<body><h1>Mesh {_e(tables.mesh.name)}</h1>"
        f'<nav>{links}</nav><p class="muted">refreshes every {REFRESH_S} s; {measured}; '
        "endpoint state from health checks, outlier ejection and the tries of the last 5m</p>"
        f"{_alerts_section(alerts)}{_routes_section(tables)}{services}</body></html>\n"
    )
