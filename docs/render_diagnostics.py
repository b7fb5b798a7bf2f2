"""Rewrite the examples of docs/diagnostics.md from the golden cases and the real CLI.

Each example in the doc is a line `` `CASE.yaml`: `` followed by a ```yaml block (the case file)
and a plain ``` block (what ``meshgen validate CASE.yaml`` prints, run in the cases folder).
This script replaces both blocks with the current file and the current output, so no example
can show a message the compiler no longer prints (or an internal error). ``--check`` writes
nothing and exits 1 when the doc is out of date.

    python docs/render_diagnostics.py [--check]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "diagnostics.md"
CASES = ROOT / "tests" / "diagnostics" / "cases"
PYTHONPATH = os.environ.get("PYTHONPATH", "")

EXAMPLE = re.compile(
    r"^`(?P<case>[EW]\d{3}-[a-z0-9-]+\.yaml)`:\n\n```yaml\n.*?^```\n\n"
    r"(?:with `--overlay [^`]+`:\n\n```yaml\n.*?^```\n\n)?```\n.*?^```\n",
    re.MULTILINE | re.DOTALL,
)


def case_options(case: str) -> list[str]:
    """The OPTIONS of a first line ``# meshgen validate OPTIONS`` of the case."""
    first = (CASES / case).read_bytes().split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return first.split()[3:] if first.startswith("# meshgen validate ") else []


def overlay_of(case: str) -> str | None:
    """The file a case names with ``--overlay`` (relative to the cases folder), if any."""
    options = case_options(case)
    return options[options.index("--overlay") + 1] if "--overlay" in options else None


def cli_output(case: str) -> str:
    """stdout + stderr of ``meshgen validate [OPTIONS] CASE`` run in the cases folder (this
    checkout's); OPTIONS come from a first line ``# meshgen validate OPTIONS`` of the case."""
    options = case_options(case)
    proc = subprocess.run(
        [sys.executable, "-m", "meshgen", "validate", *options, case],
        cwd=CASES,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), PYTHONPATH)))},
    )
    return proc.stdout + proc.stderr


def _text(path: Path) -> str:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return text if text.endswith("\n") else text + "\n"


def render_example(case: str) -> str:
    """The case, its overlay (when it names one), and what validate prints."""
    overlay = overlay_of(case)
    shown = ""
    if overlay is not None:
        shown = f"with `--overlay {overlay}`:\n\n```yaml\n{_text(CASES / overlay)}```\n\n"
    output = cli_output(case)
    if not output.endswith("\n"):
        output += "\n"
    return f"`{case}`:\n\n```yaml\n{_text(CASES / case)}```\n\n{shown}```\n{output}```\n"


def render(doc: str) -> str:
    return EXAMPLE.sub(lambda m: render_example(m.group("case")), doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is out of date")
    args = parser.parse_args(argv)
    current = DOC.read_text(encoding="utf-8")
    fresh = render(current)
    missing = sorted(p.name for p in CASES.glob("*.yaml") if f"`{p.name}`:" not in fresh)
    if missing:
        print(f"cases without an example in {DOC.name}: {', '.join(missing)}", file=sys.stderr)
    if args.check:
        if fresh != current:
            print(f"{DOC} is out of date: run python docs/render_diagnostics.py", file=sys.stderr)
            return 1
        return 1 if missing else 0
    DOC.write_text(fresh, encoding="utf-8")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
