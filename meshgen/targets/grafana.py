"""Grafana target: ``DIST/grafana/dashboard.json``, one panel set repeated per service.

The dashboard holds a row of panels (request rate, 5xx share, p50/p99 latency, endpoint health)
whose queries select ``service=~"$service"``; the row repeats over the ``service`` variable, a
custom variable listing the mesh's services. When the mesh has SLOs, a second row repeats over
``slo_service``, which lists only the services that have one, with the SLO panels (error budget
remaining, 5xx share against the budget): a service without an SLO gets no empty SLO panel.
So every service gets its panel set while the file stays the same size at 10 or 10,000
services (one copy per service was 39 MiB at 10,000 and drew 50,000 panels on open). Small
meshes open with every service shown; larger ones open on the first service.

Rates use ``$__rate_interval`` (at least four scrape intervals, as Grafana recommends, so a
panel never shows gaps at a short zoom); the 5xx share is ``(5xx or vector(0)) / all``, so it
reads 0, not "no data", for a service with traffic and no error yet. Built as Python data and
written with sorted keys (deterministic, no template needed for JSON). Panels use the
runtime's metric names and the SLO recordings of rules.yml, so the dashboard works against a
Prometheus that scrapes ``/metrics`` and loads the rules; the Envoy target writes the same
dashboard on Envoy's names (:mod:`.metric_names`) as ``dashboard.envoy.json``, for a
Prometheus that scrapes Envoy's ``/stats/prometheus`` and loads ``rules.envoy.yml``. The
data source is a dashboard variable (``${datasource}``), so importing it asks for one. JSON
files carry no header comment; MANIFEST.json records who generated them.
"""

from __future__ import annotations

import json
from typing import Any

from meshgen.runtime.tables import Tables

from . import RenderContext
from .metric_names import RUNTIME, Metrics

SCHEMA_VERSION = 39  # Grafana 10.x / 11.x dashboards
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24
SERVICE_VAR = "service"
SLO_SERVICE_VAR = "slo_service"
RATE = "$__rate_interval"
SHOW_ALL_UP_TO = 20
"""Meshes with at most this many services open with every service's row repeated."""
ALL = "$__all"


def _panel(
    title: str, unit: str, targets: list[tuple[str, str]], kind: str = "timeseries"
) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if unit == "percentunit":
        panel["fieldConfig"]["defaults"].update({"min": 0, "max": 1})
    return panel


def service_panels(m: Metrics = RUNTIME) -> list[dict[str, Any]]:
    """Request rate, 5xx share, p50/p99 latency and endpoint health of ``$service``."""
    sel, traffic = m.matchers(f"${SERVICE_VAR}", "=~")
    requests = m.responses.format(sel=traffic)
    buckets = m.buckets.format(sel=traffic)
    rate_title = "Request rate" + (" (every try)" if m.counts else "")
    return [
        _panel(
            rate_title,
            "reqps",
            [(f"sum by ({m.code}) (rate({requests}[{RATE}]))", f"{{{{{m.code}}}}}")],
        ),
        _panel(
            "Error rate (5xx share)" if not m.grpc_errors else "Error rate (5xx and gRPC errors)",
            "percentunit",
            [
                (
                    f"({m.error_sum(traffic, RATE)} or vector(0)) / sum(rate({requests}[{RATE}]))",
                    "errors" if m.grpc_errors else "5xx",
                )
            ],
        ),
        _panel(
            "Latency",
            "s",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (rate({buckets}[{RATE}]))){m.seconds}",
                    f"p{p}",
                )
                for q, p in ((0.5, "50"), (0.99, "99"))
            ],
        ),
        _panel(
            "Endpoint health",
            "none",
            [endpoint_health(m, sel)],
        ),
    ]


def endpoint_health(m: Metrics, sel: str) -> tuple[str, str]:
    """Per endpoint (runtime) or healthy of all (Envoy has no per-endpoint health series)."""
    if m.total:
        return (f"sum({m.healthy.format(sel=sel)})", "healthy endpoints")
    return (f"max by (endpoint) ({m.healthy.format(sel=sel)})", "{{endpoint}}")


def slo_panels() -> list[dict[str, Any]]:
    """Budget remaining and 5xx share against the budget, for each SLO of ``$slo_service``."""
    sel = f'service=~"${SLO_SERVICE_VAR}"'
    remaining = f"meshgen_slo:error_budget_remaining:ratio{{{sel}}}"
    return [
        _panel("SLO error budget remaining", "percentunit", [(remaining, "{{slo}}")], "stat"),
        _panel(
            "SLO 5xx share vs budget",
            "percentunit",
            [
                (f"meshgen_slo:sli_error:ratio_rate1h{{{sel}}}", "{{slo}} 5xx share (1h)"),
                (f"meshgen_slo:error_budget:ratio{{{sel}}}", "{{slo}} budget"),
            ],
        ),
    ]


def service_variable(services: list[str], name: str = SERVICE_VAR) -> dict[str, Any]:
    """A custom variable listing ``services``, multi-select with All.

    Grafana splits a custom variable's query at commas (``\\,`` is a literal comma); service
    names (``[a-z][a-z0-9-]*``) never need it, other text is escaped anyway.
    """
    shown = services if len(services) <= SHOW_ALL_UP_TO else services[:1]
    current = (
        {"text": ["All"], "value": [ALL]} if shown is services else {"text": shown, "value": shown}
    )
    return {
        "name": name,
        "label": "Service" if name == SERVICE_VAR else "Service with an SLO",
        "type": "custom",
        "query": ",".join(s.replace(",", "\\,") for s in services),
        "multi": True,
        "includeAll": True,
        "current": current,
        "hide": 0,
    }


def _row(title: str, repeat: str, y: int, panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row repeated over ``repeat`` at height ``y``, then its panels side by side."""
    row = {
        "type": "row",
        "title": title,
        "repeat": repeat,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
    }
    width = WIDTH // len(panels)
    for i, panel in enumerate(panels):
        panel["gridPos"] = {"h": 8, "w": width, "x": i * width, "y": y + 1}
    return [row, *panels]


def dashboard(tables: Tables, m: Metrics = RUNTIME) -> dict[str, Any]:
    """The dashboard model: a row per ``$service``, then a row per ``$slo_service``."""
    panels = _row(f"${SERVICE_VAR}", SERVICE_VAR, 0, service_panels(m))
    variables = [service_variable([c.name for c in tables.clusters])]
    with_slos = sorted({slo.service for slo in tables.slos})
    if with_slos:
        panels += _row(f"SLOs of ${SLO_SERVICE_VAR}", SLO_SERVICE_VAR, 9, slo_panels())
        variables.append(service_variable(with_slos, SLO_SERVICE_VAR))
    for i, panel in enumerate(panels, start=1):
        panel["id"] = i
    engine = f"-{m.engine.lower()}" if m.engine else ""
    return {
        "title": f"meshgen {tables.mesh.name}" + (f" ({m.engine})" if m.engine else ""),
        "uid": f"meshgen-{tables.mesh.name}"[: 40 - len(engine)] + engine,
        "tags": ["meshgen"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                },
                *variables,
            ]
        },
        "panels": panels,
    }


def dashboard_text(tables: Tables, m: Metrics = RUNTIME) -> str:
    """The dashboard as JSON with sorted keys and a final newline."""
    return json.dumps(dashboard(tables, m), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """``{"grafana/dashboard.json": text}`` on the runtime's series."""
    return {"grafana/dashboard.json": dashboard_text(tables)}
