"""The project is self-contained: nothing points users at a document they do not have.

The mesh.yaml contract users read is docs/reference.md; an internal design note named
``SPEC`` + ``.md`` exists only outside this repository, so no file here may mention it (nor
cite its sections by name the way old comments here did).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = re.compile(r"SPEC\.md|\bSPEC (?:\"|[A-Z][a-z])|\(SPEC[ ,:]")


def _project_files() -> list[Path]:
    """Tracked files and new ones git does not ignore (so a file added today counts too)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_file_mentions_the_internal_spec() -> None:
    offenders = []
    for path in _project_files():
        if not path.is_file() or path.is_symlink():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if FORBIDDEN.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "point at docs/reference.md instead:\n" + "\n".join(offenders)


def test_the_pattern_catches_what_it_should() -> None:
    """The check itself: the spellings seen in this repository before, and harmless ones."""
    spec = "SPEC"
    bad = [f"see {spec}.md", f'wins ({spec} "Route")', f"({spec} Merging)", f"({spec}, Access)"]
    good = ["check SPEC and write DIST", "spec(SPEC.format(a=a))", "ok(SPEC)", "SPEC = '''"]
    assert all(FORBIDDEN.search(s) for s in bad)
    assert not any(FORBIDDEN.search(s) for s in good)
