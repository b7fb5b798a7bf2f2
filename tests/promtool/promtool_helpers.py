"""Feed one synthetic scenario to ``promtool test rules`` and to the embedded evaluator.

A :class:`Scenario` is a set of series sampled every 15 s from t=0 (None = not scraped at that
step: the first gap becomes a staleness marker, as a scrape would write). The embedded
evaluator runs over it step by step; its firing alerts become the ``exp_alerts`` of a promtool
unit test over the same ``input_series`` and the generated ``rules.yml``. promtool exit 0
therefore means both executors fired the same alerts, with the same labels and annotations,
at every checked evaluation time.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from conftest import require_binary

from meshgen.runtime.observe.alerts import AlertEvaluator, compile_rules
from meshgen.runtime.observe.metrics import LabelKey, Samples, escape_label_value
from meshgen.runtime.tables import Alert, MeshInfo, Slo, Tables
from meshgen.targets import make_context
from meshgen.targets import prometheus as prometheus_target

STEP_S = 15


@dataclass
class Scenario:
    steps: int
    series: dict[tuple[str, LabelKey], list[float | None]] = field(default_factory=dict)

    def add(self, name: str, labels: dict[str, str], values: Sequence[float | None]) -> None:
        assert len(values) == self.steps, (name, labels, len(values))
        self.series[(name, tuple(sorted(labels.items())))] = list(values)

    def samples(self, step: int) -> Samples:
        out: Samples = {}
        for (name, labels), values in self.series.items():
            value = values[step]
            if value is not None:
                out.setdefault(name, {})[labels] = value
        return out


def monitoring_tables(alerts: Iterable[Alert] = (), slos: Iterable[Slo] = ()) -> Tables:
    return Tables(
        mesh=MeshInfo("shop", "mesh.test"),
        clusters=(),
        routes=(),
        listeners=(),
        alerts=tuple(alerts),
        slos=tuple(slos),
    )


FiringAt = dict[int, dict[str, list[dict[str, Any]]]]
"""step -> alertname -> firing alerts (labels without alertname, annotations)."""


def run_embedded(tables: Tables, scenario: Scenario) -> FiringAt:
    """Evaluate every step as the runtime would (snapshot at t, then the rules at t)."""
    evaluator = AlertEvaluator(tables.alerts, tables.slos)
    names = [rule.name for rule in compile_rules(tables.alerts, tables.slos)]
    out: FiringAt = {}
    for step in range(scenario.steps):
        evaluator.step(float(step * STEP_S), scenario.samples(step))
        firing: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for state in evaluator.states.values():
            if state.state == "firing":
                labels = {k: v for k, v in state.rule.labels if k != "alertname"}
                firing[state.rule.name].append(
                    {"exp_labels": labels, "exp_annotations": dict(state.rule.annotations)}
                )
        out[step] = firing
    return out


def _series_text(name: str, labels: LabelKey) -> str:
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _values_text(values: Sequence[float | None]) -> str:
    parts: list[str] = []
    previous: float | None = None
    for value in values:
        if value is None:
            parts.append("stale" if previous is not None else "_")
        else:
            parts.append(repr(float(value)))
        previous = value
    return " ".join(parts)


def write_rules(tables: Tables, folder: Path) -> Path:
    text = prometheus_target.render(tables, make_context("mesh.yaml", "0.0.0"))
    path = folder / "rules.yml"
    path.write_text(text["prometheus/rules.yml"])
    return path


def promtool_test(
    tables: Tables, scenario: Scenario, expected: FiringAt, steps: Iterable[int], folder: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``promtool test rules`` asserting ``expected`` at ``steps``; return the result."""
    promtool = require_binary("promtool")
    rules = write_rules(tables, folder)
    tests = []
    for step in steps:
        for alertname, alerts in sorted(expected[step].items()):
            tests.append(
                {"eval_time": f"{step * STEP_S}s", "alertname": alertname, "exp_alerts": alerts}
            )
    document = {
        "rule_files": [rules.name],
        "evaluation_interval": f"{STEP_S}s",
        "tests": [
            {
                "interval": f"{STEP_S}s",
                "input_series": [
                    {"series": _series_text(name, labels), "values": _values_text(values)}
                    for (name, labels), values in sorted(scenario.series.items())
                ],
                "alert_rule_test": tests,
            }
        ],
    }
    test_file = folder / "test.yml"
    test_file.write_text(yaml.safe_dump(document, sort_keys=False, width=1 << 20))
    return subprocess.run(
        [promtool, "test", "rules", test_file.name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def assert_promtool_agrees(
    tables: Tables, scenario: Scenario, steps: Iterable[int], folder: Path
) -> FiringAt:
    """The embedded evaluator's firing alerts at ``steps`` are exactly promtool's."""
    expected = run_embedded(tables, scenario)
    result = promtool_test(tables, scenario, expected, steps, folder)
    assert result.returncode == 0, (
        f"promtool disagrees with the embedded evaluator:\n{result.stdout[-6000:]}"
        f"\n{result.stderr[-2000:]}"
    )
    return expected


def fired_steps(expected: FiringAt, alertname: str) -> list[int]:
    return [step for step, alerts in sorted(expected.items()) if alerts.get(alertname)]


def dump(expected: FiringAt) -> str:
    """Compact timeline for failure messages."""
    return json.dumps({s: sorted(k for k, v in a.items() if v) for s, a in expected.items()})
