"""meshgen.pyyaml hands yaml.reader a pattern equal to its own that compiles ~12x faster
(tests/unit/test_cli.py checks that a validate's yaml.reader took it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from meshgen.pyyaml import NON_PRINTABLE, PYYAML_NON_PRINTABLE

ROOT = Path(__file__).resolve().parents[2]


def test_the_pattern_matches_what_pyyamls_own_matches_on_every_code_point() -> None:
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    theirs = re.compile(PYYAML_NON_PRINTABLE, re.UNICODE)  # str patterns' default: not cached
    ours = re.compile(NON_PRINTABLE)
    assert theirs.pattern == PYYAML_NON_PRINTABLE
    assert ours.pattern == NON_PRINTABLE
    assert theirs.findall(every) == ours.findall(every)


def test_no_other_meshgen_module_imports_yaml() -> None:
    importing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "meshgen").rglob("*.py"))
        if path.name != "pyyaml.py"
        and re.search(r"^\s*(import yaml|from yaml[ .])", path.read_text(encoding="utf-8"), re.M)
    ]
    assert importing == []
