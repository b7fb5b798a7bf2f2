"""Grafana target: ``DIST/grafana/dashboard.json``, one row of panels per service.

Built as Python data and written with sorted keys (deterministic, no template needed for
JSON). Panels use the runtime's metric names and the SLO recordings of rules.yml, so the
dashboard works against a Prometheus that scrapes ``/metrics`` and loads the rules. The data
source is a dashboard variable (``${datasource}``), so importing it asks for one. JSON files
carry no header comment; MANIFEST.json records who generated them.
"""

from __future__ import annotations

import json
from typing import Any

from meshgen.runtime.tables import Slo, Tables

from . import RenderContext

SCHEMA_VERSION = 39  # Grafana 10.x / 11.x dashboards
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24


def _q(value: str) -> str:
    return json.dumps(value)


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


def service_panels(service: str, slos: list[Slo]) -> list[dict[str, Any]]:
    """Request rate, error rate, p50/p99 latency, endpoint health and SLO budget remaining."""
    sel = f"service={_q(service)}"
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
    if slos:
        targets = [
            (f"meshgen_slo:error_budget_remaining:ratio{{slo={_q(slo.name)}}}", slo.name)
            for slo in slos
        ]
        panels.append(_panel("SLO error budget remaining", "percentunit", targets, "stat"))
    return panels


def dashboard(tables: Tables) -> dict[str, Any]:
    """The dashboard model; panel ids and grid positions are assigned in service order."""
    panels: list[dict[str, Any]] = []
    y = 0
    for cluster in tables.clusters:
        slos = [s for s in tables.slos if s.service == cluster.name]
        panels.append(
            {
                "type": "row",
                "title": cluster.name,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
            }
        )
        y += 1
        row = service_panels(cluster.name, slos)
        width = WIDTH // len(row)
        for i, panel in enumerate(row):
            panel["gridPos"] = {"h": 8, "w": width, "x": i * width, "y": y}
            panels.append(panel)
        y += 8
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
                }
            ]
        },
        "panels": panels,
    }


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """``{"grafana/dashboard.json": text}`` with sorted keys and a final newline."""
    text = json.dumps(dashboard(tables), sort_keys=True, indent=2, ensure_ascii=False)
    return {"grafana/dashboard.json": text + "\n"}
