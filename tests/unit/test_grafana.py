"""Grafana target: valid dashboard JSON, one panel set repeated per service, PromQL that parses."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from conftest import require_binary
from tables_factory import HOSTILE, make_tables

from meshgen.runtime.tables import Cluster, Tables
from meshgen.targets import make_context
from meshgen.targets.grafana import SCHEMA_VERSION, SHOW_ALL_UP_TO, render

BASE = ["Request rate", "Error rate (5xx and gRPC errors)", "Latency", "Endpoint health"]
SLO = ["SLO error budget remaining", "SLO 5xx share vs budget"]


def _dashboard(tables: Tables | None = None) -> dict[str, Any]:
    tables = make_tables(HOSTILE) if tables is None else tables
    text = render(tables, make_context("mesh.yaml", "1.2.3"))["grafana/dashboard.json"]
    assert text.endswith("}\n")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _variable(dash: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in dash["templating"]["list"] if v["name"] == name)
    return found


def _with_services(count: int) -> Tables:
    tables = make_tables()
    first = tables.clusters[0]
    clusters = tuple(dataclasses.replace(first, name=f"svc-{i}") for i in range(count))
    return dataclasses.replace(tables, clusters=clusters)


def _services_of(variable: dict[str, Any]) -> list[str]:
    """A custom variable's values as Grafana reads its query: split at unescaped commas."""
    return [v.replace("\\,", ",") for v in re.findall(r"(?:\\,|[^,])+", variable["query"])]


def test_one_panel_set_repeated_per_service() -> None:
    """One row repeats over `service`, which lists every service; the SLO row repeats over
    `slo_service`, which lists only the services that have an SLO."""
    dash = _dashboard()
    assert dash["schemaVersion"] == SCHEMA_VERSION and dash["uid"] == "meshgen-shop"
    service = _variable(dash, "service")
    assert service["type"] == "custom" and service["multi"] and service["includeAll"]
    assert _services_of(service) == [c.name for c in make_tables().clusters]
    rows = [p for p in dash["panels"] if p["type"] == "row"]
    assert [(r["title"], r["repeat"]) for r in rows] == [
        ("$service", "service"),
        ("SLOs of $slo_service", "slo_service"),
    ]
    assert dash["panels"][0] is rows[0]
    titles = [p["title"] for p in dash["panels"] if p["type"] != "row"]
    assert titles == [*BASE, *SLO]
    with_slo = sorted({s.service for s in make_tables(HOSTILE).slos})
    assert _services_of(_variable(dash, "slo_service")) == with_slo
    assert len(with_slo) < len(make_tables().clusters)  # the case that matters: not all
    no_slos = _dashboard(dataclasses.replace(make_tables(), slos=()))
    assert [p["title"] for p in no_slos["panels"][1:]] == BASE
    assert "slo_service" not in {v["name"] for v in no_slos["templating"]["list"]}


def test_slo_panels_select_only_services_with_an_slo() -> None:
    """Every SLO panel query selects `$slo_service`, never `$service` (no empty SLO panels)."""
    dash = _dashboard()
    for panel in dash["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        slo = panel["title"] in SLO
        assert all(('service=~"$slo_service"' in e) == slo for e in exprs), panel["title"]


def test_rates_use_the_rate_interval_and_the_5xx_share_reads_zero() -> None:
    """`$__rate_interval` windows everywhere; the 5xx share is `(5xx or vector(0)) / all`."""
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    assert not any("[5m]" in e for e in exprs)
    assert all("[$__rate_interval]" in e for e in exprs if "rate(" in e)
    share = next(
        t["expr"] for p in _dashboard()["panels"] if p["title"] == BASE[1] for t in p["targets"]
    )
    assert share.startswith("(sum(rate(") and ") or vector(0)) / sum(rate(" in share
    assert 'grpc_status=~"2|4|12|13|14|15"' in share  # gRPC errors count too, once


def test_size_does_not_grow_with_panels_per_service() -> None:
    """10x the services adds only their names to the variable, not panels."""
    small, large = _dashboard(_with_services(50)), _dashboard(_with_services(500))
    assert len(small["panels"]) == len(large["panels"])
    assert _services_of(_variable(large, "service")) == [f"svc-{i}" for i in range(500)]


def test_small_meshes_show_every_service_large_ones_the_first() -> None:
    """Opening a large mesh's dashboard must not draw a panel set for every service."""
    current = _variable(_dashboard(_with_services(SHOW_ALL_UP_TO)), "service")["current"]
    assert current == {"text": ["All"], "value": ["$__all"]}
    current = _variable(_dashboard(_with_services(SHOW_ALL_UP_TO + 1)), "service")["current"]
    assert current == {"text": ["svc-0"], "value": ["svc-0"]}


def test_commas_in_a_service_name_are_escaped() -> None:
    tables = make_tables()
    odd = dataclasses.replace(tables.clusters[0], name="a,b")
    clusters: tuple[Cluster, ...] = (odd, *tables.clusters[1:])
    dash = _dashboard(dataclasses.replace(tables, clusters=clusters))
    assert _services_of(_variable(dash, "service")) == ["a,b", "ratings"]


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
    """promtool parses each panel expression (as a recording rule, with Grafana's variables
    replaced as Grafana does); each selects its row's service variable."""
    promtool = require_binary("promtool")
    rules: list[dict[str, str]] = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert 'service=~"$service"' in expr or 'service=~"$slo_service"' in expr
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            expr = expr.replace("$__rate_interval", "1m").replace("$slo_service", "reviews")
            expr = expr.replace("$service", "reviews")
            rules.append({"record": f"dashboard:check:{len(rules)}", "expr": expr})
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_deterministic() -> None:
    ctx = make_context("mesh.yaml", "1.2.3")
    assert render(make_tables(), ctx) == render(make_tables(), ctx)
