"""`meshgen validate` takes several files (and `-` for standard input) in one run: each is
checked on its own, the worst result is the exit code, JSON is one document for all."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
CANARY = str(ROOT / "examples" / "canary" / "mesh.yaml")
SLO = str(ROOT / "examples" / "slo" / "mesh.yaml")
BROKEN = """\
version: 1
mesh: {name: shop}
services: {web: {discovery: {static: [{address: 127.0.0.1:9081}]}}}
routes: [{name: web, match: {path_prefix: /}, to: [{service: wbe}]}]
"""


@pytest.fixture
def broken(tmp_path: Path) -> str:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return str(path)


def test_several_valid_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", CANARY, SLO]) == 0
    assert capsys.readouterr().err.splitlines() == [f"{CANARY}: ok", f"{SLO}: ok"]


def test_one_invalid_file_fails_the_run_and_every_file_is_checked(
    broken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", broken, CANARY]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:4:" in err and "wbe" in err
    assert f"{CANARY}: ok" in err


def test_json_is_one_document_for_all_files(
    broken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", CANARY, broken, broken, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    items = doc if isinstance(doc, list) else doc["diagnostics"]
    assert len(items) == 2 and all("wbe" in json.dumps(d) for d in items)
    assert main(["validate", CANARY, broken, "--format", "github"]) == 1
    assert [ln[:7] for ln in capsys.readouterr().out.splitlines()] == ["::error"]


def test_stdin_among_files(
    broken: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = Path(CANARY).read_text()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["validate", SLO, "-"]) == 0
    assert capsys.readouterr().err.splitlines() == [f"{SLO}: ok", "<stdin>: ok"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(BROKEN.encode())))
    assert main(["validate", "-"]) == 1
    assert "<stdin>:4:" in capsys.readouterr().err


def test_stdin_twice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-", "-"]) == 2
    assert "standard input (-) can be read only once" in capsys.readouterr().err
    assert main(["validate"]) == 2  # at least one file


UNUSED_BY_VALIDATE = ("jinja2", "meshgen.targets", "meshgen.emit", "asyncio", "cryptography")


@pytest.mark.parametrize("spec", [CANARY, str(ROOT / "examples" / "mtls" / "mesh.yaml")])
def test_validate_imports_no_renderer(spec: str) -> None:
    """validate checks the spec without rendering files, so it never imports the targets,
    jinja2, emit, the runtime's event loop or the certificate library (it starts fast);
    --target still reports the named targets' gaps, which needs them."""
    probe = (
        "import sys\n"
        "from meshgen.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"print(code, sorted(m for m in sys.modules if m.startswith({UNUSED_BY_VALIDATE!r})))\n"
    )
    run = [sys.executable, "-c", probe, "validate", spec]
    out = subprocess.run(run, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split(" ", 1) == ["0", "[]\n"]
    out = subprocess.run(
        [*run, "--target", "envoy"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.startswith("0 ") and "meshgen.targets.envoy_gaps" in out
