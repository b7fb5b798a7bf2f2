"""Grafana target: valid dashboard JSON, one panel row per service, PromQL that parses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from conftest import require_binary
from tables_factory import HOSTILE, make_tables

from meshgen.targets import make_context
from meshgen.targets.grafana import SCHEMA_VERSION, render


def _dashboard() -> dict[str, Any]:
    files = render(make_tables(HOSTILE), make_context("mesh.yaml", "1.2.3"))
    text = files["grafana/dashboard.json"]
    assert text.endswith("}\n")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_one_row_per_service_with_the_panel_set() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] == SCHEMA_VERSION and dash["uid"] == "meshgen-shop"
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == [c.name for c in make_tables().clusters]
    titles: dict[str, list[str]] = {}
    current = ""
    for panel in dash["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            titles[current] = []
        else:
            titles[current].append(panel["title"])
    base = ["Request rate", "Error rate (5xx share)", "Latency", "Endpoint health"]
    slo_services = {s.service for s in make_tables().slos}
    for service, panels in titles.items():
        extra = ["SLO error budget remaining"] if service in slo_services else []
        assert panels == base + extra, service


def test_ids_unique_and_grid_does_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_every_query_is_valid_promql_for_the_service(tmp_path: Path) -> None:
    """promtool parses each panel expression (as a recording rule) and it names a service."""
    promtool = require_binary("promtool")
    rules = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            assert "service=" in target["expr"] or "slo=" in target["expr"]
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            rules.append({"record": f"dashboard:check:{len(rules)}", "expr": target["expr"]})
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_deterministic() -> None:
    ctx = make_context("mesh.yaml", "1.2.3")
    assert render(make_tables(), ctx) == render(make_tables(), ctx)
