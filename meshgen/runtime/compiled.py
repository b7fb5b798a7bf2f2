"""Which runtime runs: this copy compiled with mypyc, when a build of exactly its source exists.

Why: the same source compiled with mypyc serves a request with less CPU (BENCHMARKS.md), but a
compiled module must never run against a different source, Python or machine. ``python DIST
--accelerate`` (:mod:`.accelerate`) compiles a DIST's ``meshgen_runtime`` once per machine into
a cache folder named by the hash of every ``.py`` file of the copy and the interpreter's
extension suffix (``~/.cache/meshgen/runtime-<hash>-cpython-311-x86_64-linux-gnu``). When the
package is imported, :func:`select` hashes the copy it is part of and, if that folder holds a
finished build, puts it first on the package's ``__path__``: every submodule then loads from
the build (compiled, or the same source where mypyc could not compile it), and the folder
itself goes on ``sys.path`` for the build's shared library. Anything else (no build, another
source, another Python) runs the pure copy.

``MESHGEN_RUNTIME`` chooses: ``auto`` (default) as above, ``pure`` never loads a build,
``compiled`` refuses to start without one (``python DIST`` exits 2; CI uses it so that a silent
fallback cannot hide a broken build). ``MESHGEN_CACHE_DIR`` moves the cache.

This module and the package ``__init__`` run before the choice, so they import only the
standard library and stay pure.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = "meshgen_runtime"
"""The name compiled modules are built under (a DIST's copy); other names always run pure."""
MODES = ("auto", "pure", "compiled")
BUILT = "BUILT.json"
"""Written last into a build folder: a folder without it is no build."""


@dataclass(frozen=True)
class Selected:
    """What runs in ``package``: ``compiled`` with its build folder, or pure and why
    (``reason``)."""

    package: str
    compiled: bool
    source_hash: str
    folder: Path | None
    reason: str


def mode() -> str:
    """``MESHGEN_RUNTIME`` (``auto`` when unset); an unknown value is an error."""
    value = os.environ.get("MESHGEN_RUNTIME", "") or "auto"
    if value not in MODES:
        raise ValueError(f"MESHGEN_RUNTIME={value!r}: expected one of {', '.join(MODES)}")
    return value


def cache_root() -> Path:
    """``$MESHGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/meshgen``, else ``~/.cache/meshgen``."""
    explicit = os.environ.get("MESHGEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "meshgen"


def source_files(root: Path) -> list[Path]:
    """Every ``.py`` file of the runtime copy at ``root``, sorted (caches left out)."""
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.relative_to(root).parts)


def source_hash(root: Path) -> str:
    """sha256 over each file's path under ``root`` and its bytes: the build's identity."""
    import hashlib

    digest = hashlib.sha256()
    for path in source_files(root):
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(rel), rel, len(data)))
        digest.update(data)
    return digest.hexdigest()


def abi_tag() -> str:
    """The interpreter's extension suffix without dots (``cpython-311-x86_64-linux-gnu``)."""
    import sysconfig

    suffix = str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
    return suffix.removesuffix(".so").removesuffix(".pyd").strip(".")


def build_folder(digest: str) -> Path:
    """Where the build of the source with hash ``digest`` for this interpreter lives."""
    return cache_root() / f"runtime-{digest[:32]}-{abi_tag()}"


def shared_library(digest: str) -> str:
    """The top-level module name of a build's mypyc shared library (``<name>__mypyc``): the
    source hash is in it, so two builds in one process cannot clash."""
    return f"{PACKAGE}_{digest[:16]}"


def find(root: Path) -> Selected:
    """The build of the copy at ``root`` if one is finished, else pure with the reason."""
    digest = source_hash(root)
    folder = build_folder(digest)
    if not (folder / BUILT).is_file():
        return Selected(PACKAGE, False, digest, None, f"no compiled build at {folder}")
    return Selected(PACKAGE, True, digest, folder, "")


def select(path: list[str], name: str) -> Selected:
    """At package import: put the matching build first on ``path`` (the package's
    ``__path__``) unless ``MESHGEN_RUNTIME`` says pure; return what runs."""
    wanted = mode()
    if name != PACKAGE:
        return Selected(name, False, "", None, f"builds are of {PACKAGE}, this is {name}")
    if wanted == "pure":
        return Selected(name, False, "", None, "MESHGEN_RUNTIME=pure")
    chosen = find(Path(path[0]))
    if chosen.folder is not None:
        path.insert(0, str(chosen.folder / PACKAGE))
        sys.path.append(str(chosen.folder))  # where the shared library is (a top-level name)
    return chosen


PROBE = "forward.attempt"
"""A module every build compiles; loaded from an extension module means compiled code runs."""


def running(selected: Selected) -> bool:
    """True when the build was selected and its compiled modules are the ones imported."""
    probe = sys.modules.get(f"{PACKAGE}.{PROBE}")
    origin = str(getattr(probe, "__file__", "") or "")
    return selected.compiled and origin.endswith(tuple(EXTENSION_SUFFIXES))


def describe(selected: Selected) -> str:
    """``compiled (mypyc, <hash>)`` or ``pure``: what the start-up log and ``/config`` say."""
    return f"compiled (mypyc, {selected.source_hash[:16]})" if running(selected) else "pure"


def required_but_missing(selected: Selected) -> str:
    """Why the runtime must not start ('' when it may): ``MESHGEN_RUNTIME=compiled`` and the
    compiled modules are not the ones imported (call it once the runtime is imported). Under
    another package name than :data:`PACKAGE` (the compiler's own ``meshgen.runtime``, which
    its tests and tools import) there is no build to require."""
    if mode() != "compiled" or running(selected) or selected.package != PACKAGE:
        return ""
    why = selected.reason or f"{PACKAGE}.{PROBE} did not load from the build"
    return (
        f"MESHGEN_RUNTIME=compiled but the pure runtime would run ({why}); "
        f"build it with: {sys.executable} DIST --accelerate"
    )
