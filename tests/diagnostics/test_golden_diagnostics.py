"""Golden diagnostics: each broken spec in cases/ and the exact output of `meshgen validate`.

A case is ``cases/<CODE>-<slug>.yaml``; its ``.expected`` holds what the CLI prints (the spec
named as given on the command line, relative to cases/) and the exit status. A first line
``# meshgen validate OPTIONS`` adds those options (``--target envoy``), here and in the doc.
Regenerate with ``python -m pytest tests/diagnostics --update-golden`` and review the diff.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meshgen.cli import main

CASES = Path(__file__).resolve().parent / "cases"
UPDATE = "python -m pytest tests/diagnostics --update-golden"


def _cases() -> list[Path]:
    return sorted(CASES.glob("*.yaml"))


def case_options(case: Path) -> list[str]:
    """The options of a first line ``# meshgen validate OPTIONS`` (docs/render_diagnostics.py
    reads the same line)."""
    first = case.read_bytes().split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return first.split()[3:] if first.startswith("# meshgen validate ") else []


def _run(case: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.chdir(CASES)
    code = main(["validate", *case_options(case), case.name])
    captured = capsys.readouterr()
    return f"{captured.out}{captured.err}[exit {code}]\n"


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
def test_diagnostic_output_matches_golden(
    case: Path,
    update_golden: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI reports the case's code, exactly as recorded, with the right exit status."""
    code = case.stem.split("-")[0]
    assert re.fullmatch(r"[EW]\d{3}", code), f"case {case.name} must be named <CODE>-<slug>.yaml"
    output = _run(case, monkeypatch, capsys)
    kind = "error" if code.startswith("E") else "warning"
    assert f"{kind}[{code}]" in output, f"{case.name} does not produce {code}:\n{output}"
    expected_exit = 1 if kind == "error" else 0
    assert output.endswith(f"[exit {expected_exit}]\n"), output
    assert "Traceback" not in output and "internal error" not in output
    golden = case.with_suffix(".expected")
    if update_golden:
        golden.write_text(output, encoding="utf-8")
        return
    if not golden.exists():
        pytest.fail(f"{golden.name} is missing; create it with: {UPDATE}")
    expected = golden.read_text(encoding="utf-8")
    assert output == expected, f"output of {case.name} changed; if intended run: {UPDATE}"


def _missing_file(folder: Path) -> str:
    return "missing.yaml"


def _too_large_file(folder: Path) -> str:
    from meshgen.source import MAX_BYTES

    big = folder / "huge.yaml"
    with big.open("wb") as out:
        out.write(b"version: 1\n")
        out.truncate(MAX_BYTES + 1)
    return big.name


# Cases that cannot be a committed .yaml file: each writes its input into a temp folder.
GENERATED = {"E001-missing-file": _missing_file, "E002-too-large": _too_large_file}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_case_matches_golden(
    name: str,
    tmp_path: Path,
    update_golden: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing file and an oversize file each get one positioned diagnostic and exit 1."""
    monkeypatch.chdir(tmp_path)
    code = main(["validate", GENERATED[name](tmp_path)])
    captured = capsys.readouterr()
    output = f"{captured.out}{captured.err}[exit {code}]\n"
    assert f"error[{name[:4]}]" in output and output.endswith("[exit 1]\n"), output
    golden = CASES / "generated" / f"{name}.expected"
    if update_golden:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(output, encoding="utf-8")
        return
    assert golden.exists(), f"{golden.name} is missing; create it with: {UPDATE}"
    assert output == golden.read_text(encoding="utf-8"), f"{name} changed; if intended: {UPDATE}"


def test_every_expected_file_has_a_case() -> None:
    """No orphaned .expected files (a renamed case must take its golden file along)."""
    orphans = [p.name for p in CASES.glob("*.expected") if not p.with_suffix(".yaml").exists()]
    assert orphans == []
