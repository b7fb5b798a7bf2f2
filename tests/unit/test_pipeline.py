"""The pipeline: stage order, all errors of the first failing stage, determinism, loadability."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import gaps_without_positions

from meshgen.emit import MANIFEST, emit
from meshgen.pipeline import Result, compile_spec, compile_text
from meshgen.runtime.app.loader import load_tables
from meshgen.source import loads

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*/mesh.yaml"))

TWO_STAGES_BROKEN = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  web:
    discovery:
      static: [{address: 127.0.0.1:9081}]
    colour: blue
routes:
  - name: web
    match: {path_prefix: /}
    to: [{service: nope}]
"""

THREE_REFERENCE_ERRORS = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  web:
    discovery:
      static: [{address: 127.0.0.1:9081}]
routes:
  - name: b
    match: {path_prefix: /b}
    to: [{service: second}]
  - name: a
    match: {path_prefix: /a}
    to: [{service: first}]
listeners:
  - {name: edge, address: 127.0.0.1:0, routes: [zzz]}
"""


def _codes(result: Result) -> list[str]:
    return [d.code for d in result.diagnostics]


def test_a_schema_error_in_one_part_does_not_hide_errors_in_another() -> None:
    """The service with the unknown field is left out; the route's reference is still checked."""
    result = compile_text(TWO_STAGES_BROKEN, "mesh.yaml")
    assert result.files is None and result.tables is None
    assert _codes(result) == ["E101", "E201"]


EVERY_STAGE = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  reviews:
    discovery:
      static: [{address: 127.0.0.1:9081}]
    helth_check: {tcp: {}}
  ratings:
    discovery:
      static: [{address: 127.0.0.1:9082}]
routes:
  - name: split
    match: {path_prefix: /split}
    to:
      - {service: reveiws, weight: 50}
      - {service: ratings, weight: 60}
  - name: own
    match: {path_prefix: /own}
    to: [{service: reviews}]
"""


def test_a_typo_an_unknown_service_and_bad_weights_in_one_run() -> None:
    """One run reports all three; the route to the service with the typo is not 'unknown'."""
    result = compile_text(EVERY_STAGE, "mesh.yaml")
    assert _codes(result) == ["E101", "E301", "E201"]
    unknown = result.diagnostics[2]
    assert unknown.hint == "did you mean 'reviews'?" and unknown.span.line == 15


def test_an_error_outside_every_part_stops_after_its_stage() -> None:
    """A broken `defaults:` affects every service: nothing after the schema is judged."""
    broken = TWO_STAGES_BROKEN.replace("services:\n", "defaults: {timeout: soon}\nservices:\n")
    assert _codes(compile_text(broken, "mesh.yaml")) == ["E103", "E101"]


def test_all_errors_of_a_stage_are_reported_sorted_by_position() -> None:
    result = compile_text(THREE_REFERENCE_ERRORS, "mesh.yaml")
    assert result.files is None
    lines = [d.span.line for d in result.diagnostics if d.severity == "error"]
    assert len(lines) >= 3 and lines == sorted(lines)
    messages = " ".join(d.message for d in result.diagnostics)
    assert all(f"'{name}'" in messages for name in ("second", "first", "zzz")), messages


def test_identical_input_gives_identical_files() -> None:
    text = EXAMPLES[0].read_text()
    a, b = compile_text(text, "mesh.yaml"), compile_text(text, "mesh.yaml")
    assert a.files is not None and a.files == b.files


def without_positions(files: dict[str, str]) -> dict[str, object]:
    """The files but MANIFEST.json, with each GAPS.txt as its set of lines without their
    FILE:LINE:COL (GAPS.txt is a positional report, like diagnostics: reordering keys moves
    lines, never what is listed)."""
    out: dict[str, object] = {k: v for k, v in files.items() if k != MANIFEST}
    for path, text in files.items():
        if path.endswith("/GAPS.txt"):
            out[path] = gaps_without_positions(text)
    return out


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.parent.name)
def test_mapping_key_order_does_not_change_the_output(spec: Path, tmp_path: Path) -> None:
    """Reversing every mapping's key order changes only the spec hash in MANIFEST.json."""
    original = compile_spec(spec)
    assert original.files is not None, original.diagnostics
    doc, _ = loads(spec.read_text(), "mesh.yaml")  # YAML 1.2: `on:` stays a string key
    assert doc is not None
    data = _reverse_keys(doc.data)
    shuffled_spec = tmp_path / "mesh.yaml"
    shuffled_spec.write_text(yaml.safe_dump(data, sort_keys=False))
    if (spec.parent / "certs").is_dir():
        (tmp_path / "certs").symlink_to(spec.parent / "certs")
    shuffled = compile_spec(shuffled_spec)
    assert shuffled.files is not None, shuffled.diagnostics
    assert without_positions(shuffled.files) == without_positions(original.files)
    files_a = json.loads(original.files[MANIFEST])["files"]
    positional = [p for p in files_a if p.endswith("/GAPS.txt")]
    for manifest in (files_a, files_b := json.loads(shuffled.files[MANIFEST])["files"]):
        for p in positional:
            del manifest[p]
    assert files_b == files_a


def _forget_runtime() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "meshgen_runtime"]:
        del sys.modules[name]


@pytest.fixture
def dist_on_path(tmp_path: Path) -> Iterator[Path]:
    """A DIST path whose meshgen_runtime the test may import (put on sys.path once built)."""
    saved = list(sys.path)
    yield tmp_path / "dist"
    sys.path[:] = saved
    _forget_runtime()


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.parent.name)
def test_the_runtime_loader_reads_what_was_built(spec: Path, dist_on_path: Path) -> None:
    """After the swap, DIST's tables load through the copied runtime into the planned values."""
    result = compile_spec(spec)
    assert result.files is not None and result.tables is not None
    emit(result.files, dist_on_path)
    _forget_runtime()
    sys.path.insert(0, str(dist_on_path))
    importlib.invalidate_caches()
    loaded = load_tables(dist_on_path)
    assert type(loaded.mesh).__module__ == "meshgen_runtime.tables"  # the copied runtime
    assert dataclasses.asdict(loaded) == dataclasses.asdict(result.tables)


DUPLICATE_IN_A_SERVICE = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  reviews:
    discovery:
      static: [{address: 127.0.0.1:9081}]
    timeout: 1s
    timeout: 2s
  ratings:
    discovery:
      static: [{address: 127.0.0.1:9082}]
routes:
  - name: r
    to: [{service: reviews}, {service: raitngs}]
"""


def test_a_recoverable_yaml_error_in_one_part_does_not_hide_the_others() -> None:
    """A duplicate key inside a service leaves that service out; the route is still checked
    (its reference to the left-out service is not 'unknown', the typo is)."""
    result = compile_text(DUPLICATE_IN_A_SERVICE, "mesh.yaml")
    assert _codes(result) == ["E008", "E302", "E302", "E201"]
    assert result.diagnostics[3].message.endswith("unknown service 'raitngs'")


def test_a_recoverable_yaml_error_outside_every_part_stops_after_source() -> None:
    broken = DUPLICATE_IN_A_SERVICE.replace("version: 1\n", "version: 1\nversion: 1\n")
    assert _codes(compile_text(broken, "mesh.yaml")) == ["E008", "E008"]


def test_a_builds_values_are_freed_without_the_collector() -> None:
    """The model, tables and document hold no reference cycles (nor does anything that holds
    them), so they are freed as soon as the result goes; a build pauses the collector, and a
    cycle would keep all of it alive until the next collection scans it."""
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        result = compile_spec(ROOT / "examples" / "mtls" / "mesh.yaml")
        assert result.ok and result.tables and result.mesh and result.document
        values = (result.tables, result.tables.clusters[0], result.mesh, result.document)
        watched = {id(v): type(v) for v in values}
        del result, values
        left = [o for o in gc.get_objects() if watched.get(id(o)) is type(o)]
        assert left == []
    finally:
        if was_enabled:
            gc.enable()
