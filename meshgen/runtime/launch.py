"""Where ``python DIST`` starts: a missing requirement is an instruction, not a traceback.

This module imports only the standard library, so it loads on any Python. The runtime proper
(:mod:`.app.main`) needs the packages in ``DIST/requirements.txt`` (httptools, dnspython, ...); when
one of them is missing, the user learns which one and the command that installs them all.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_MISSING_REQUIREMENT = 2
"""Same code as a usage error: the command cannot run as invoked on this Python."""


def missing_requirement_message(module: str, dist: Path) -> str:
    """What to print when the runtime's import of ``module`` failed."""
    requirements = dist / "requirements.txt"
    return (
        f"python {dist}: error: the meshgen runtime needs the Python package providing "
        f"{module!r}, which is not installed for {sys.executable}.\n"
        f"Install the runtime's requirements with:\n"
        f"  {sys.executable} -m pip install -r {requirements}"
    )


def start(argv: list[str], dist: Path) -> int:
    """Import the runtime and run it; exit 2 with install instructions when a package is
    missing, or when ``MESHGEN_RUNTIME=compiled`` and the compiled runtime did not load.
    ``--accelerate`` compiles this copy instead (:mod:`.accelerate`)."""
    if "--accelerate" in argv:
        from .accelerate import main as accelerate

        return accelerate(dist / "meshgen_runtime")
    try:
        from .app.main import main
    except ModuleNotFoundError as exc:
        module = (exc.name or "").partition(".")[0]
        if not module or module == (__package__ or "").partition(".")[0]:
            raise  # a broken runtime copy, not a missing requirement
        print(missing_requirement_message(module, dist), file=sys.stderr)
        return EXIT_MISSING_REQUIREMENT
    from . import SELECTED
    from .compiled import required_but_missing

    problem = required_but_missing(SELECTED)
    if problem:
        print(f"python {dist}: error: {problem}", file=sys.stderr)
        return EXIT_MISSING_REQUIREMENT
    return main(argv, dist=dist)
