"""Overlays: partial mesh.yaml files merged on top, diagnostics in the file that wrote the value."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from meshgen.cli import main
from meshgen.diagnostics import render_text
from meshgen.emit import MANIFEST, sha256
from meshgen.pipeline import compile_spec, load_mesh
from meshgen.source import load
from meshgen.source_overlay import merge, writer_of

BASE = """\
version: 1
mesh: {name: shop, domain: mesh.test}
defaults:
  timeout: 10s
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081}
        - {address: 127.0.0.1:9082}
    retries: {attempts: 2, on: [5xx, reset]}
  ratings:
    discovery:
      static: [{address: 127.0.0.1:9083}]
    timeout: 3s
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(BASE)
    return path


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_merge_rules() -> None:
    """Mappings merge key by key, lists replace whole, null removes; inputs are not mutated."""
    base = {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2}
    over = {"a": {"y": [3], "z": None, "w": {"n": 1}}, "b": None, "c": [None]}
    merged, writers = merge(base, [over])
    assert merged == {"a": {"x": 1, "y": [3], "w": {"n": 1}}, "c": [None]}
    assert base == {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2}
    assert writer_of(writers, ("a", "x")) is None
    assert writer_of(writers, ("a", "y", 0)) == 0
    assert writer_of(writers, ("a", "w", "n")) == 0 and writer_of(writers, ("c",)) == 0


def test_later_overlays_win_and_removal_forgets_the_writer() -> None:
    """The deepest overlay that set a value is its writer; a removed value has none."""
    merged, writers = merge(
        {"s": {"t": 1}},
        [{"s": {"r": {"a": 1, "b": 2}}}, {"s": {"r": {"b": 3}}}, {"s": {"t": None}}],
    )
    assert merged == {"s": {"r": {"a": 1, "b": 3}}}
    assert writer_of(writers, ("s", "r", "a")) == 0
    assert writer_of(writers, ("s", "r", "b")) == 1
    assert writer_of(writers, ("s", "t")) is None


def test_the_model_records_overlay_origins(spec: Path) -> None:
    """Effective values come from the last writer; origins name the file that wrote them."""
    prod = _write(spec.parent, "envs/prod.yaml", "services:\n  reviews:\n    timeout: 2s\n")
    eu = _write(spec.parent, "eu.yaml", "services:\n  reviews:\n    retries: {attempts: 1}\n")
    mesh, diags = load_mesh(spec, [prod, eu])
    assert mesh is not None and diags == []
    reviews = mesh.services["reviews"]
    assert reviews.call.timeout_s == 2.0 and reviews.origin("timeout").file == str(prod)
    retries = reviews.call.retries
    assert retries is not None and retries.attempts == 1 and retries.on == ("5xx", "reset")
    assert reviews.origin("retries.attempts").file == str(eu)
    assert reviews.origin("retries.on").file == str(spec)
    assert mesh.services["ratings"].origin("timeout").file == str(spec)
    assert mesh.source is not None
    span = mesh.source.span(reviews.origin("timeout").path)
    assert (span.file, span.line, span.col) == (str(prod), 3, 14)


def test_lists_are_replaced_and_null_removes(spec: Path) -> None:
    """An overlay's endpoint list replaces mesh.yaml's; `null` drops a service."""
    over = _write(
        spec.parent,
        "o.yaml",
        "services:\n  reviews:\n    discovery:\n      static: [{address: 10.0.0.1:80}]\n"
        "  ratings: null\n",
    )
    mesh, diags = load_mesh(spec, [over])
    assert mesh is not None, diags
    assert list(mesh.services) == ["reviews"]
    discovery = mesh.services["reviews"].discovery
    assert [e.address for e in discovery.endpoints] == ["10.0.0.1:80"]  # type: ignore[union-attr]


def test_diagnostics_point_into_the_file_that_wrote_the_value(spec: Path) -> None:
    """A wrong type and an unknown service written by an overlay are reported in the overlay;
    the schema runs on the merged result (the overlay alone has no version)."""
    over = _write(
        spec.parent,
        "prod.yaml",
        "# production\nservices:\n  ratings:\n    timeout: 5\nroutes:\n"
        "  - name: r\n    to: [{service: reveiws}]\n",
    )
    mesh, diags = load_mesh(spec, [over])
    assert mesh is None
    got = [(d.code, d.span.file, d.span.line, d.span.col) for d in diags]
    assert got == [("E103", str(over), 4, 14), ("E201", str(over), 7, 20)]
    doc, _ = load(spec, [over])
    assert doc is not None
    text = render_text(diags, doc.sources())
    assert "    4 |     timeout: 5\n" in text and "    7 |     to: [{service: reveiws}]\n" in text


def test_removing_a_required_field_is_reported(spec: Path) -> None:
    """An overlay may break the merged spec: `mesh: null` leaves it without a mesh name."""
    over = _write(spec.parent, "o.yaml", "mesh: null\n")
    mesh, diags = load_mesh(spec, [over])
    assert mesh is None and [d.code for d in diags] == ["E108"]
    assert "'mesh'" in diags[0].message and diags[0].span.file == str(spec)


def test_relative_file_paths_resolve_against_the_spec_folder(spec: Path) -> None:
    """A certificate named in envs/prod.yaml is looked up next to mesh.yaml, not in envs/."""
    _write(spec.parent, "certs/ca.pem", "x")
    over = _write(
        spec.parent,
        "envs/prod.yaml",
        "services:\n  reviews:\n    tls: {mode: simple, ca: certs/ca.pem}\n",
    )
    mesh, diags = load_mesh(spec, [over])
    assert mesh is not None and diags == []
    missing = _write(
        spec.parent,
        "envs/bad.yaml",
        "services:\n  reviews:\n    tls: {mode: simple, ca: nope.pem}\n",
    )
    _, diags = load_mesh(spec, [missing])
    assert [(d.code, d.span.file, d.span.line) for d in diags] == [("E501", str(missing), 3)]


def test_every_input_file_reports_its_own_syntax_errors(spec: Path) -> None:
    """Broken YAML in two overlays: both are reported, each in its own file."""
    one = _write(spec.parent, "one.yaml", "services: [\n")
    two = _write(spec.parent, "two.yaml", "- a list\n")
    mesh, diags = load_mesh(spec, [one, two])
    assert mesh is None
    assert [(d.code, d.span.file) for d in diags] == [("E004", str(one)), ("E007", str(two))]
    assert diags[1].hint is not None and "overlay" in diags[1].hint


def test_an_empty_overlay_changes_nothing(spec: Path) -> None:
    empty = _write(spec.parent, "empty.yaml", "# nothing yet\n")
    with_it, plain = compile_spec(spec, overlays=[empty]), compile_spec(spec)
    assert with_it.files is not None and plain.files is not None
    assert {k: v for k, v in with_it.files.items() if k != MANIFEST} == {
        k: v.replace("from mesh.yaml —", "from mesh.yaml + empty.yaml —")
        for k, v in plain.files.items()
        if k != MANIFEST
    }


def test_manifest_lists_every_input(spec: Path) -> None:
    """MANIFEST.json: each input's path relative to mesh.yaml's folder and its sha256."""
    prod = _write(spec.parent, "envs/prod.yaml", "services:\n  reviews:\n    timeout: 2s\n")
    result = compile_spec(spec, overlays=[prod])
    assert result.files is not None
    manifest = json.loads(result.files[MANIFEST])
    assert manifest["inputs"] == [
        {"path": "mesh.yaml", "sha256": sha256(BASE.encode())},
        {"path": "envs/prod.yaml", "sha256": sha256(prod.read_bytes())},
    ]
    assert "from mesh.yaml + envs/prod.yaml — do not edit" in result.files["mesh/routing.py"]


def test_cli_build_with_overlays_in_order(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--overlay` is repeatable and applied in order: the last one wins."""
    monkeypatch.chdir(spec.parent)
    _write(spec.parent, "a.yaml", "services: {ratings: {timeout: 4s}}\n")
    _write(spec.parent, "b.yaml", "services: {ratings: {timeout: 6s}}\n")
    args = ["build", "mesh.yaml", "--overlay", "a.yaml", "--overlay", "b.yaml", "-o", "dist"]
    assert main(args) == 0
    assert "timeout_s=6.0" in (spec.parent / "dist/mesh/routing.py").read_text()
    assert main(["validate", "mesh.yaml", "--overlay", "missing.yaml"]) == 1
    assert "missing.yaml:1:1: error[E001]" in capsys.readouterr().err


def test_stdin_spec_resolves_paths_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-` reads mesh.yaml from stdin; its relative paths resolve against the cwd."""
    _write(tmp_path, "certs/ca.pem", "x")
    text = BASE + "    tls: {mode: simple, ca: certs/ca.pem}\n"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["validate", "-"]) == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    monkeypatch.chdir(tmp_path / "certs")
    assert main(["validate", "-"]) == 1
    err = capsys.readouterr().err
    assert "<stdin>:16:29: error[E501]" in err and "against the working directory" in err


def test_a_recoverable_error_in_an_overlay_leaves_its_part_out(spec: Path) -> None:
    """A duplicate key in an overlay's service: that service is left out, the rest checked."""
    over = _write(
        spec.parent,
        "o.yaml",
        "services:\n  ratings:\n    timeout: 1s\n    timeout: 2s\nroutes:\n"
        "  - name: r\n    to: [{service: ratings}, {service: nope, weight: 1}]\n",
    )
    mesh, diags = load_mesh(spec, [over])
    assert mesh is None
    assert [(d.code, d.span.file, d.span.line) for d in diags] == [
        ("E008", str(over), 4),
        ("E302", str(over), 7),
        ("E201", str(over), 7),
    ]
