"""``python DIST --accelerate``: compile this runtime copy with mypyc into the machine's cache.

Why here and not in a wheel: the modules are compiled for the Python and machine that run
them, from the very source the DIST carries, with nothing but packages on the index (mypy,
which brings mypyc, and setuptools: ``pip install 'meshgen[accelerate]'`` or ``pip install
mypy setuptools``) and a C compiler with the Python headers. Where any of that is missing,
the build says why and the pure runtime keeps running (:mod:`.compiled` finds no build).

Theory of operation: the copy's ``.py`` files go to a fresh folder beside the cache entry, a
child Python runs mypyc there (one shared library, ``-O3``) on every module but
:data:`PURE`, a second child imports every compiled module from the result, and only then is
the folder given its ``BUILT.json`` and renamed into place, so a half-built or broken build is
never found. The modules in :data:`PURE` stay source: they run before the choice (the package
``__init__``, this module, :mod:`.compiled`, :mod:`.launch`) or use what mypyc cannot compile
(``policy/tls.py`` subclasses ``ssl.SSLError``; ``app/main.py`` deletes locals to free a retired
generation before a collection; ``codec/h2lib.py`` picks ``jh2`` or ``h2`` in a branch that
type checking never takes, which compiled code treats as unreachable).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from .compiled import (
    BUILT,
    PACKAGE,
    PROBE,
    build_folder,
    shared_library,
    source_files,
    source_hash,
)

PURE = frozenset(
    {
        "__init__.py",
        "accelerate.py",
        "compiled.py",
        "launch.py",
        "policy/tls.py",
        "app/main.py",
        "codec/h2lib.py",
    }
)
"""Modules (paths under the package) that are copied but never compiled."""

SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify

paths, group = sys.argv[1:-1], sys.argv[-1]
setup(
    name=group,
    ext_modules=mypycify(
        ["--ignore-missing-imports", *paths], opt_level="3", group_name=group, target_dir="_build"
    ),
    script_args=["--quiet", "build_ext", "--inplace", "--build-temp", "_build/obj",
                 "--build-lib", "_build/lib"],
)
"""
"""The child's build script: mypyc through setuptools, compiled in place."""

VERIFY = """
import importlib, sys
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module
"""
"""The second child: every compiled module imports from the build (from extension files)."""


class BuildError(Exception):
    """Why the copy could not be compiled; the pure runtime stays in use."""


def _module(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _run(args: list[str], cwd: Path, what: str, log: Path) -> None:
    """Run a child Python in ``cwd``; its output goes to ``log``; BuildError if it fails."""
    with open(log, "ab") as out:
        done = subprocess.run(
            [sys.executable, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    if done.returncode != 0:
        kept = cwd.with_suffix(".log")  # (the work folder goes; its log stays for a look)
        shutil.copyfile(log, kept)
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        why = f"{what} failed (exit {done.returncode}; log: {kept})"
        raise BuildError(why + ":\n" + "\n".join(tail))


def _check_tools() -> None:
    """The build's needs, each named with what to install."""
    for module, package in (("mypyc", "mypy"), ("setuptools", "setuptools")):
        try:
            __import__(module)
        except ImportError:
            raise BuildError(
                f"{module} is not installed for {sys.executable}: "
                f"{sys.executable} -m pip install {package}"
            ) from None
    import sysconfig

    compiler = str(sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        raise BuildError(f"no C compiler ({compiler}): apt-get install gcc (or build-essential)")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        raise BuildError(f"no Python headers ({headers}): apt-get install python3-dev")


def build(root: Path) -> Path:
    """Compile the runtime copy at ``root`` into its cache folder (nothing to do when it is
    there); return the folder. Raises BuildError with the reason."""
    digest = source_hash(root)
    folder = build_folder(digest)
    if (folder / BUILT).is_file():
        return folder
    _check_tools()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        rels = [p.relative_to(root).as_posix() for p in source_files(root)]
        for rel in rels:
            (work / PACKAGE / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, work / PACKAGE / rel)
        compiled = [rel for rel in rels if rel not in PURE]
        log = work / "build.log"
        paths = [f"{PACKAGE}/{rel}" for rel in compiled]
        group = shared_library(digest)
        _run(["-c", SETUP, *paths, group], work, "mypyc", log)
        modules = [_module(rel) for rel in compiled]
        if _module(PROBE.replace(".", "/") + ".py") not in modules:
            raise BuildError(f"{PACKAGE}.{PROBE} was not compiled")
        _run(["-c", VERIFY, *modules], work, "importing the compiled modules", log)
        shutil.rmtree(work / "_build", ignore_errors=True)
        shutil.rmtree(work / ".mypy_cache", ignore_errors=True)
        for stray in work.rglob("*.c"):
            stray.unlink()
        built = {"source_hash": digest, "python": sys.version, "compiled": sorted(modules)}
        (work / BUILT).write_text(json.dumps(built, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(work, folder)
        except OSError:
            if not (folder / BUILT).is_file():  # (another process finishing first is fine)
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def main(root: Path) -> int:
    """``--accelerate``: build (or find) the compiled copy; 0 when it is there, 1 otherwise."""
    try:
        folder = build(root)
    except (BuildError, OSError) as exc:
        print(f"accelerate: cannot compile the runtime; the pure runtime stays in use: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"accelerate: compiled runtime ready in {folder}")
    print(textwrap.fill(f"python {root.parent} runs it from now on (until its runtime changes)"))
    return 0
