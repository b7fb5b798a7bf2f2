"""The admin ``/status`` page: one HTML document a person reads at a glance.

Every service of the tables gets a section (circuit state, healthy count, discovery state,
request and 5xx totals) with one row per endpoint (health, ejection, ejection count, requests
in flight); active alerts come first. Live state comes from ``Upstreams.snapshot()``; a
service missing from it (not started yet) shows its table endpoints and the health gauges.
Every value goes through ``html.escape``. The page refreshes itself every 5 s.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from .metrics import Metrics
from .tables import Cluster, StaticDiscovery, Tables

REFRESH_S = 5

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#eee} .ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600}
.warn{color:#9a6700;font-weight:600} .muted{color:#777} nav a{margin-right:1em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _flag(good: bool, yes: str, no: str) -> str:
    cls = "ok" if good else "bad"
    return f'<span class="{cls}">{_e(yes if good else no)}</span>'


def _row(cells: Iterable[str], attrs: str = "") -> str:
    return f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _alerts_section(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<h2>Alerts</h2><p id="alerts" data-firing="0" class="ok">No active alerts.</p>'
    rows = []
    for alert in alerts:
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        state = str(alert.get("state", ""))
        attrs = f' data-alert="{_e(labels.get("alertname", ""))}" data-state="{_e(state)}"'
        cls = "bad" if state == "firing" else "warn"
        cells = [
            _e(labels.get("alertname", "")),
            _e(labels.get("service", "")),
            _e(labels.get("severity", "")),
            f'<span class="{cls}">{_e(state)}</span>',
            _e(alert.get("activeAt", "")),
            _e(annotations.get("summary", "")),
        ]
        rows.append(_row(cells, attrs))
    firing = sum(1 for a in alerts if a.get("state") == "firing")
    head = "<tr><th>alert</th><th>service</th><th>severity</th><th>state</th>"
    head += "<th>since</th><th>summary</th></tr>"
    return f'<h2>Alerts</h2><table id="alerts" data-firing="{firing}">{head}{"".join(rows)}</table>'


def _table_endpoints(cluster: Cluster, metrics: Metrics) -> list[dict[str, Any]]:
    """Endpoints as known without Upstreams: static ones, health from the gauges."""
    if not isinstance(cluster.discovery, StaticDiscovery):
        return []
    return [
        {
            "address": e.address,
            "zone": e.zone,
            "weight": e.weight,
            "labels": dict(e.labels),
            "healthy": bool(metrics.endpoint_healthy.get((cluster.name, e.address), 1)),
            "ejected": False,
            "in_flight": 0,
        }
        for e in cluster.discovery.endpoints
    ]


def _service_section(cluster: Cluster, state: Mapping[str, Any], metrics: Metrics) -> str:
    name = cluster.name
    endpoints: list[dict[str, Any]] = list(
        state.get("endpoints", _table_endpoints(cluster, metrics))
    )
    healthy = sum(1 for e in endpoints if e.get("healthy"))
    circuit_open = bool(metrics.circuit_open.get((name,), 0))
    requests = sum(v for k, v in metrics.requests.items() if k[2] == name)
    errors = sum(v for k, v in metrics.requests.items() if k[2] == name and 500 <= k[4] <= 599)
    discovery = state.get("discovery", {})
    if isinstance(cluster.discovery, StaticDiscovery):
        found = "static"
    else:
        ok = discovery.get("ok", True)
        found = f"dns {_e(cluster.discovery.query_name)} " + _flag(bool(ok), "ok", "failing")
        if discovery.get("last_error"):
            found += f' <span class="muted">{_e(discovery["last_error"])}</span>'
    backup = state.get("backup") or cluster.failover.backup
    count = f"{healthy}/{len(endpoints)}"
    facts = [
        f"healthy {_flag(healthy > 0, count, count)}",
        "circuit " + _flag(not circuit_open, "closed", "open"),
        f"discovery {found}",
        f"requests {requests} (5xx {errors})",
        f"retries {metrics.retries.get((name,), 0)}",
    ]
    if backup:
        facts.append(f"backup {_e(backup)}")
    head = "<tr><th>endpoint</th><th>zone</th><th>weight</th><th>labels</th><th>health</th>"
    head += "<th>ejected</th><th>ejections</th><th>in flight</th></tr>"
    rows = []
    for ep in endpoints:
        address = str(ep.get("address", ""))
        is_healthy, ejected = bool(ep.get("healthy")), bool(ep.get("ejected"))
        labels = ", ".join(f"{k}={v}" for k, v in sorted(dict(ep.get("labels") or {}).items()))
        attrs = (f' data-endpoint="{_e(address)}" data-healthy="{str(is_healthy).lower()}"'
                 f' data-ejected="{str(ejected).lower()}"')  # fmt: skip
        cells = [
            _e(address),
            _e(ep.get("zone") or "-"),
            _e(ep.get("weight", 1)),
            _e(labels or "-"),
            _flag(is_healthy, "healthy", "unhealthy"),
            _flag(not ejected, "no", "ejected"),
            _e(metrics.ejections.get((name, address), 0)),
            _e(ep.get("in_flight", 0)),
        ]
        rows.append(_row(cells, attrs))
    body = "".join(rows) or '<tr><td colspan="8" class="muted">no endpoints</td></tr>'
    attrs = (f' id="service-{_e(name)}" data-service="{_e(name)}" data-healthy="{healthy}"'
             f' data-circuit="{"open" if circuit_open else "closed"}"')  # fmt: skip
    return (
        f"<section{attrs}><h2>{_e(name)}</h2><p>{' &middot; '.join(facts)}</p>"
        f"<table>{head}{body}</table></section>"
    )


def render_status(
    tables: Tables,
    snapshot: Mapping[str, Any],
    metrics: Metrics,
    alerts: list[dict[str, Any]],
) -> str:
    """The whole page as a string."""
    services = "".join(
        _service_section(c, snapshot.get(c.name, {}), metrics) for c in tables.clusters
    )
    links = "".join(f'<a href="/{p}">/{p}</a>' for p in ("metrics", "config", "alerts", "healthz"))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>meshgen {_e(tables.mesh.name)} status</title><style>{_STYLE}</style></head>"
        f"<body><h1>Mesh {_e(tables.mesh.name)}</h1>"
        f'<nav>{links}</nav><p class="muted">refreshes every {REFRESH_S} s</p>'
        f"{_alerts_section(alerts)}{services}</body></html>\n"
    )
