"""Shared literals: values that repeat are written once, by a stable name, and load back equal."""

from __future__ import annotations

import ast
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tables_factory import make_tables

from meshgen.runtime.app.loader import load_tables
from meshgen.runtime.tables import Cluster, Endpoint, RetryPolicy, StaticDiscovery, Subset, Tables
from meshgen.targets import make_context, py_literal
from meshgen.targets.literals import MIN_REPEATS, SharedLiterals
from meshgen.targets.python import render

V1 = (("version", "v1"),)


RETRY = RetryPolicy(2, 2.0)
RETRY_TEXT = "RetryPolicy(attempts=2, per_try_timeout_s=2.0)"


def _cluster(i: int) -> Cluster:
    endpoints = (Endpoint(f"10.0.0.{i}", 80, labels=V1), Endpoint(f"10.0.1.{i}", 80, labels=V1))
    subsets = (Subset("v1", V1),)
    return Cluster(f"svc-{i}", StaticDiscovery(endpoints), subsets=subsets, retries=RETRY)


def _tables(count: int) -> Tables:
    return dataclasses.replace(make_tables(), clusters=tuple(_cluster(i) for i in range(count)))


def _constants(literals: SharedLiterals) -> dict[str, str]:
    return dict(literals.constants())


@pytest.fixture
def isolated_runtime() -> Iterator[None]:
    saved = list(sys.path)
    yield
    sys.path[:] = saved
    for name in [m for m in sys.modules if m.split(".")[0] == "meshgen_runtime"]:
        del sys.modules[name]


def test_a_repeated_policy_is_one_constant_used_by_name() -> None:
    lits = SharedLiterals({"CLUSTERS": tuple(_cluster(i) for i in range(5))})
    constants = _constants(lits)
    retry = [n for n, text in constants.items() if text == RETRY_TEXT]
    assert len(retry) == 1 and retry[0].startswith("_RetryPolicy_")
    text = lits.literal("CLUSTERS")
    assert text.count(f"retries={retry[0]}") == 5 and "RetryPolicy(" not in text


def test_values_repeated_fewer_times_stay_in_place() -> None:
    lits = SharedLiterals({"CLUSTERS": tuple(_cluster(i) for i in range(MIN_REPEATS - 1))})
    assert RETRY_TEXT not in _constants(lits).values()
    assert lits.literal("CLUSTERS").count(f"retries={RETRY_TEXT}") == MIN_REPEATS - 1


def test_a_value_used_only_inside_one_constant_is_written_inside_it() -> None:
    """The subsets tuple is shared; its Subset is not a constant of its own, V1 (also on
    endpoints) is."""
    constants = _constants(SharedLiterals({"C": tuple(_cluster(i) for i in range(4))}))
    labels = next(n for n, text in constants.items() if text == "(('version', 'v1'),)")
    assert labels.startswith("_labels_")
    subsets = next(n for n, text in constants.items() if text.startswith("(Subset("))
    assert constants[subsets] == f"(Subset(name='v1', labels={labels}),)"
    assert not any(text.startswith("Subset(") for text in constants.values())
    names = list(constants)
    assert names.index(labels) < names.index(subsets), "defined before use"


def test_names_do_not_change_when_services_are_added() -> None:
    few = _constants(SharedLiterals({"C": tuple(_cluster(i) for i in range(4))}))
    many = _constants(SharedLiterals({"C": tuple(_cluster(i) for i in range(40))}))
    assert few == many


def test_equal_values_of_different_types_are_not_merged() -> None:
    """1, 1.0 and True compare equal in Python; their literals must stay apart."""
    values = [RetryPolicy(1, 1.0), RetryPolicy(True, 1.0), RetryPolicy(1, True)]  # type: ignore[arg-type]
    lits = SharedLiterals({"X": tuple(values) * MIN_REPEATS})
    assert sorted(_constants(lits).values()) == sorted(py_literal(v) for v in values)
    namespace: dict[str, object] = {"RetryPolicy": RetryPolicy}
    for name, text in lits.constants():
        exec(f"{name} = {text}", namespace)
    loaded = eval(lits.literal("X"), namespace)
    assert [type(v.attempts) for v in loaded] == [type(v.attempts) for v in tuple(values) * 3]
    assert [type(v.per_try_timeout_s) for v in loaded] == [float, float, bool] * 3


def test_a_large_mesh_round_trips_through_the_loader(
    tmp_path: Path, isolated_runtime: None
) -> None:
    """Constants are data only and the runtime loader reads back exactly the tables written."""
    tables = _tables(30)
    files = render(tables, make_context("mesh.yaml", "9.9.9"))
    routing = files["mesh/routing.py"]
    assert "\n_RetryPolicy_" in routing and "\n_labels_" in routing
    for stmt in ast.parse(routing).body:
        assert isinstance(stmt, ast.ImportFrom | ast.Expr | ast.Assign)
    for line in routing.splitlines():
        assert len(line) <= 100, line
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    assert dataclasses.asdict(load_tables(tmp_path)) == dataclasses.asdict(tables)


def test_only_written_table_types_are_imported() -> None:
    """A default left out (e.g. CircuitBreaker()) needs no import."""
    lits = SharedLiterals({"C": (_cluster(0),)})
    assert lits.classes == {"Cluster", "StaticDiscovery", "Endpoint", "Subset", "RetryPolicy"}
