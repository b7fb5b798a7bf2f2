"""``promtool check rules`` on the rules.yml and rules.envoy.yml of every example build (the
real build output)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import require_binary

from meshgen.pipeline import compile_spec
from meshgen.runtime.observe.alerts import AlertEvaluator, compile_rules
from meshgen.targets import grafana as grafana_target
from meshgen.targets import make_context

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*/mesh.yaml"))


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_rules_pass_promtool(spec: Path, tmp_path: Path) -> None:
    """Every example builds; its rules.yml passes promtool; both executors know the same
    alert names; the dashboard is valid JSON."""
    promtool = require_binary("promtool")
    result = compile_spec(spec)
    assert result.ok and result.files is not None and result.tables is not None, [
        f"{d.code} {d.message}" for d in result.diagnostics
    ]
    for name in ("rules.yml", "rules.envoy.yml"):
        path = tmp_path / name
        path.write_text(result.files[f"prometheus/{name}"])
        check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
    rules, envoy_rules = (
        result.files["prometheus/rules.yml"],
        result.files["prometheus/rules.envoy.yml"],
    )
    tables = result.tables
    for rule in compile_rules(tables.alerts, tables.slos):
        assert f"- alert: '{rule.name}'" in rules
        assert f"- alert: '{rule.name}'" in envoy_rules
    AlertEvaluator.from_tables(tables).step(0.0, {})
    dashboard = (
        result.files.get("grafana/dashboard.json")
        or grafana_target.render(tables, make_context(spec.name, "0"))["grafana/dashboard.json"]
    )
    assert json.loads(dashboard)["panels"]


def test_slo_example_has_burn_rate_alerts() -> None:
    slo = next(p for p in EXAMPLES if p.parent.name == "slo")
    result = compile_spec(slo)
    assert result.files is not None
    rules = result.files["prometheus/rules.yml"]
    assert "-page'" in rules and "-ticket'" in rules and "ratio_rate3d" in rules


def test_envoy_rules_read_envoy_series_and_say_they_count_tries() -> None:
    """rules.envoy.yml: the same alert names on Envoy's series; every traffic rule carries a
    `counts` annotation saying it counts tries, not requests after retries."""
    slo = next(p for p in EXAMPLES if p.parent.name == "slo")
    result = compile_spec(slo)
    assert result.files is not None
    rules = result.files["prometheus/rules.envoy.yml"]
    assert "meshgen_requests_total{" not in rules and "meshgen_request_duration" not in rules
    assert "envoy_cluster_upstream_rq_xx" in rules and 'envoy_response_code_class="5"' in rules
    assert "envoy_cluster_upstream_rq_time_bucket" in rules and ") / 1000 >" in rules
    alerts = [b.split("      - record: ")[0] for b in rules.split("      - alert: ")[1:]]
    traffic = [b for b in alerts if "upstream_rq" in b or "ratio_rate" in b]
    assert traffic and all("counts: 'every try:" in block for block in traffic)
