"""docs/diagnostics.md shows every golden case and exactly its recorded output.

The goldens are checked against the real CLI by test_golden_diagnostics.py; this keeps the
doc in step with them (regenerate it with ``python docs/render_diagnostics.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "diagnostics.md"
CASES = Path(__file__).resolve().parent / "cases"
EXAMPLE = re.compile(
    r"^`(?P<case>[EW]\d{3}-[a-z0-9-]+\.yaml)`:\n\n```yaml\n(?P<source>.*?)^```\n\n"
    r"(?:with `--overlay (?P<overlay>[^`]+)`:\n\n```yaml\n(?P<overlay_source>.*?)^```\n\n)?"
    r"```\n(?P<output>.*?)^```\n",
    re.MULTILINE | re.DOTALL,
)
FIX = "python docs/render_diagnostics.py"


def _examples() -> dict[str, tuple[str, str, str | None]]:
    text = DOC.read_text(encoding="utf-8")
    return {
        m["case"]: (m["source"], m["output"], m["overlay_source"]) for m in EXAMPLE.finditer(text)
    }


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_doc_example_is_the_golden_case(case: Path) -> None:
    examples = _examples()
    assert case.name in examples, f"{case.name} has no example in {DOC.name}; run {FIX}"
    source, output, overlay_source = examples[case.name]
    assert source == case.read_bytes().decode("utf-8", errors="replace"), f"run {FIX}"
    first = case.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].split()
    overlay = first[first.index("--overlay") + 1] if "--overlay" in first else None
    shown = None if overlay is None else (CASES / overlay).read_text(encoding="utf-8")
    assert overlay_source == shown, f"the overlay of {case.name} is stale; run {FIX}"
    golden = case.with_suffix(".expected").read_text(encoding="utf-8")
    recorded = golden.rsplit("[exit ", 1)[0]
    assert output == recorded, f"example output of {case.name} is stale; run {FIX}"


def test_doc_has_no_internal_error() -> None:
    assert "internal error:" not in DOC.read_text(encoding="utf-8")
