"""The one diagnostic-code registry: meshgen.codes lists every code the compiler reports."""

from __future__ import annotations

import re
from pathlib import Path

from meshgen.codes import CODES

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    p
    for p in sorted((ROOT / "meshgen").rglob("*.py"))
    if "runtime" not in p.relative_to(ROOT / "meshgen").parts and p.name != "codes.py"
]
CODE = re.compile(r"""["']([EW]\d{3})["']""")
DOC_ROW = re.compile(r"^\| ([EW]\d{3}) \| (.+?) \|$", re.MULTILINE)


def _written() -> dict[str, list[str]]:
    """Every code literal in the compiler's modules -> the modules that write it."""
    found: dict[str, list[str]] = {}
    for path in SOURCES:
        for code in set(CODE.findall(path.read_text(encoding="utf-8"))):
            found.setdefault(code, []).append(path.relative_to(ROOT).as_posix())
    return found


def test_every_code_written_in_the_compiler_is_registered() -> None:
    """A code that is reported but not in meshgen.codes has no title and no documentation."""
    unknown = {c: where for c, where in _written().items() if c not in CODES}
    assert unknown == {}, "add these codes to meshgen/codes.py"


def test_every_registered_code_is_reported_somewhere() -> None:
    """A registered code no module writes is dead (retired codes leave the registry)."""
    assert sorted(set(CODES) - set(_written())) == []


def test_docs_list_every_code_with_its_title() -> None:
    """docs/diagnostics.md's tables name each code once, with the registry's title (a retired
    code keeps its row, titled "retired: why", and leaves the registry)."""
    text = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    rows = DOC_ROW.findall(text)
    assert len(dict(rows)) == len(rows), "a code has two rows in docs/diagnostics.md"
    retired = {c for c, title in rows if title.startswith("retired")}
    assert sorted(retired & set(CODES)) == [], "a retired code is still registered"
    documented = {c: title for c, title in rows if c not in retired}
    assert sorted(set(CODES) - set(documented)) == [], "codes missing from docs/diagnostics.md"
    assert sorted(set(documented) - set(CODES)) == [], "docs/diagnostics.md lists unknown codes"
    wrong = {c: (documented[c], t) for c, t in CODES.items() if documented[c] != t}
    assert wrong == {}, "(doc title, registry title) differ"
