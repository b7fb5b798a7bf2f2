"""pre-commit hooks (``.pre-commit-hooks.yaml``): validate mesh.yaml files, check their DIST.

pre-commit passes every matching file at once; each is checked on its own, exactly as
``meshgen validate FILE`` and ``meshgen build FILE -o DIST --check`` check it, and the hook
fails when any fails. The DIST of ``path/mesh.yaml`` is ``path/dist`` unless ``--dist`` names
another folder (relative to the file's folder).

    python -m meshgen.precommit validate [--strict] FILE...
    python -m meshgen.precommit check-dist [--dist NAME] FILE...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meshgen.cli import main as meshgen


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m meshgen.precommit", description=__doc__)
    sub = p.add_subparsers(dest="hook", required=True)
    validate = sub.add_parser("validate", help="meshgen validate each FILE")
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check = sub.add_parser("check-dist", help="meshgen build FILE -o DIST --check, each FILE")
    check.add_argument("--dist", default="dist", help="DIST beside each FILE (default: dist)")
    for cmd in (validate, check):
        cmd.add_argument("files", nargs="*", type=Path, metavar="FILE", help="mesh.yaml files")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the hook on every file; the worst exit code wins (0 ok, 1 invalid, 2 usage)."""
    ns = _parser().parse_args(argv)
    worst = 0
    for path in ns.files:
        if ns.hook == "validate":
            code = meshgen(["validate", str(path), *(["--strict"] if ns.strict else [])])
        else:
            code = meshgen(["build", str(path), "-o", str(path.parent / ns.dist), "--check"])
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
