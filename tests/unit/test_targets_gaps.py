"""Capability gaps: ``--target`` selection, GAPS.txt lines at the right place, W701 only for
targets the build names, and ``--strict`` failing on them only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgen import pipeline
from meshgen.cli import main
from meshgen.target_names import NAMES
from meshgen.targets import registered, selected

FEATURES = """\
version: 1
mesh: {name: shop, domain: mesh.test}
defaults:
  retries: {attempts: 2}
services:
  web:
    discovery: {static: [{address: "127.0.0.1:9001"}]}
  pay:
    discovery: {dns: {name: pay}}
    outlier_detection: {consecutive_5xx: 3}
routes:
  - name: web
    match: {host: web.test}
    to: [{service: web}]
    fault: {delay: {fixed: 1s, percent: 50}}
    mirror: {service: pay, percent: 5}
"""


def _gaps(result: pipeline.Result, target: str = "haproxy") -> list[str]:
    assert result.files is not None, result.diagnostics
    return [x for x in result.files[f"{target}/GAPS.txt"].splitlines() if not x.startswith("#")]


def test_registry_follows_the_names() -> None:
    """--target's choices are the registry's targets, in build order."""
    assert tuple(t.name for t in registered()) == NAMES
    assert [t.name for t in selected(["envoy", "runtime"])] == ["runtime", "envoy"]
    with pytest.raises(ValueError, match="unknown target 'nginx'"):
        selected(["nginx"])


def test_gaps_are_listed_where_the_value_was_written() -> None:
    """Each gap names FILE:LINE:COL of its key (a merged value: where `defaults:` wrote it)."""
    lines = _gaps(pipeline.compile_text(FEATURES, "mesh.yaml"))
    assert lines[0].startswith("mesh.yaml:4:3: service 'pay' retries: HAProxy retries at once")
    assert lines[1].startswith("mesh.yaml:4:3: service 'web' retries:")
    assert lines[2].startswith("mesh.yaml:9:17: service 'pay' discovery.dns: at most 16")
    assert lines[3].startswith("mesh.yaml:10:5: service 'pay' outlier_detection:")
    assert lines[4] == "mesh.yaml:15:13: route 'web' fault.delay: omitted: requests are not delayed"
    assert lines[5] == "mesh.yaml:16:5: route 'web' mirror: omitted: no copy is sent"
    assert len(lines) == 6


def test_a_plain_build_lists_gaps_without_warning() -> None:
    result = pipeline.compile_text(FEATURES, "mesh.yaml")
    assert result.files is not None and "haproxy/haproxy.cfg" in result.files
    assert not [d for d in result.diagnostics if d.code == "W701"]


def test_a_named_target_warns_and_builds_only_itself() -> None:
    result = pipeline.compile_text(FEATURES, "mesh.yaml", only=["haproxy"])
    assert result.files is not None
    assert sorted(result.files) == ["MANIFEST.json", "haproxy/GAPS.txt", "haproxy/haproxy.cfg"]
    warned = [d for d in result.diagnostics if d.code == "W701"]
    assert len(warned) == len(_gaps(result)) == 6
    assert warned[-1].message == (
        "HAProxy cannot express route 'web' mirror: omitted: no copy is sent"
    )
    assert (warned[-1].span.line, warned[-1].span.col) == (16, 5)


def test_no_gap_says_so() -> None:
    plain = FEATURES.split("defaults:")[0] + FEATURES.split("  retries: {attempts: 2}\n")[1]
    plain = plain.split("  pay:")[0] + "routes:" + plain.split("routes:")[1]
    plain = plain.replace("    fault: {delay: {fixed: 1s, percent: 50}}\n", "")
    plain = plain.replace("    mirror: {service: pay, percent: 5}\n", "")
    result = pipeline.compile_text(plain, "mesh.yaml", only=["haproxy"])
    assert result.files is not None and _gaps(result) == []
    assert "# none: HAProxy expresses every field" in result.files["haproxy/GAPS.txt"]


def test_strict_fails_only_for_a_named_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--strict` alone builds (gaps are listed, not warned); `--strict --target haproxy`
    fails with W701; an unknown target is a usage error."""
    spec = tmp_path / "mesh.yaml"
    spec.write_text(FEATURES)
    assert main(["build", str(spec), "-o", str(tmp_path / "all"), "--strict"]) == 0
    assert (tmp_path / "all" / "haproxy" / "GAPS.txt").is_file()
    capsys.readouterr()
    code = main(["build", str(spec), "-o", str(tmp_path / "h"), "--strict", "--target", "haproxy"])
    assert code == 1 and "warning[W701]" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
    code = main(["validate", str(spec), "--target", "runtime", "--strict"])
    assert code == 0
    assert main(["validate", str(spec), "--target", "nginx"]) == 2
