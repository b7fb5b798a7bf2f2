"""Grafana target: ``DIST/grafana/dashboard.json``, one panel set repeated per service.

The dashboard holds a single row of panels (request rate, error rate, p50/p99 latency,
endpoint health, SLO budget remaining) whose queries select ``service=~"$service"``; the row
repeats over the ``service`` variable, a custom variable listing the mesh's services. So every
service gets its panel set while the file stays the same size at 10 or 10,000 services (one
copy per service was 39 MiB at 10,000 and drew 50,000 panels on open). Small meshes open with
every service shown; larger ones open on the first service, and the picker selects more.

Built as Python data and written with sorted keys (deterministic, no template needed for
JSON). Panels use the runtime's metric names and the SLO recordings of rules.yml, so the
dashboard works against a Prometheus that scrapes ``/metrics`` and loads the rules. The data
source is a dashboard variable (``${datasource}``), so importing it asks for one. JSON files
carry no header comment; MANIFEST.json records who generated them.
"""

from __future__ import annotations

import json
from typing import Any

from meshgen.runtime.tables import Tables

from . import RenderContext

SCHEMA_VERSION = 39  # Grafana 10.x / 11.x dashboards
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24
SERVICE_VAR = "service"
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


def service_panels(with_slos: bool) -> list[dict[str, Any]]:
    """Request rate, error rate, p50/p99 latency, endpoint health and SLO budget remaining.

    Queries select the service of the repeated row (``$service``); the SLO panel exists when the
    mesh has SLOs and shows each of the service's SLOs (empty for a service without one).
    """
    sel = f'service=~"${SERVICE_VAR}"'
    requests = f"meshgen_requests_total{{{sel}}}"
    buckets = f"meshgen_request_duration_seconds_bucket{{{sel}}}"
    panels = [
        _panel("Request rate", "reqps", [(f"sum by (code) (rate({requests}[5m]))", "{{code}}")]),
        _panel(
            "Error rate (5xx share)",
            "percentunit",
            [
                (
                    f'sum(rate(meshgen_requests_total{{{sel},code=~"5.."}}[5m]))'
                    f" / sum(rate({requests}[5m]))",
                    "5xx",
                )
            ],
        ),
        _panel(
            "Latency",
            "s",
            [
                (f"histogram_quantile({q}, sum by (le) (rate({buckets}[5m])))", f"p{p}")
                for q, p in ((0.5, "50"), (0.99, "99"))
            ],
        ),
        _panel(
            "Endpoint health",
            "none",
            [(f"max by (endpoint) (meshgen_endpoint_healthy{{{sel}}})", "{{endpoint}}")],
        ),
    ]
    if with_slos:
        expr = f"meshgen_slo:error_budget_remaining:ratio{{{sel}}}"
        panels.append(_panel("SLO error budget remaining", "percentunit", [(expr, "{{slo}}")],
                             "stat"))  # fmt: skip
    return panels


def service_variable(services: list[str]) -> dict[str, Any]:
    """The ``service`` variable: a custom list of the mesh's services, multi-select with All.

    Grafana splits a custom variable's query at commas (``\\,`` is a literal comma); service
    names (``[a-z][a-z0-9-]*``) never need it, other text is escaped anyway.
    """
    shown = services if len(services) <= SHOW_ALL_UP_TO else services[:1]
    current = (
        {"text": ["All"], "value": [ALL]} if shown is services else {"text": shown, "value": shown}
    )
    return {
        "name": SERVICE_VAR,
        "label": "Service",
        "type": "custom",
        "query": ",".join(s.replace(",", "\\,") for s in services),
        "multi": True,
        "includeAll": True,
        "current": current,
        "hide": 0,
    }


def dashboard(tables: Tables) -> dict[str, Any]:
    """The dashboard model: one row repeated over ``$service`` and its panel set."""
    row = {
        "type": "row",
        "title": f"${SERVICE_VAR}",
        "repeat": SERVICE_VAR,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": 0},
    }
    panels: list[dict[str, Any]] = [row]
    row_panels = service_panels(bool(tables.slos))
    width = WIDTH // len(row_panels)
    for i, panel in enumerate(row_panels):
        panel["gridPos"] = {"h": 8, "w": width, "x": i * width, "y": 1}
        panels.append(panel)
    for i, panel in enumerate(panels, start=1):
        panel["id"] = i
    return {
        "title": f"meshgen {tables.mesh.name}",
        "uid": f"meshgen-{tables.mesh.name}"[:40],
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
                service_variable([c.name for c in tables.clusters]),
            ]
        },
        "panels": panels,
    }


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """``{"grafana/dashboard.json": text}`` with sorted keys and a final newline."""
    text = json.dumps(dashboard(tables), sort_keys=True, indent=2, ensure_ascii=False)
    return {"grafana/dashboard.json": text + "\n"}
