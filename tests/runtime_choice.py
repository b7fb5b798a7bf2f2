"""Which runtime each test runs: end-to-end tests the compiled (mypyc) one but
:data:`PURE_SUBSET`; every other test the pure one (those import DIST copies in-process).

``MESHGEN_RUNTIME`` in pytest's environment chooses: unset (or ``auto``) is that split, so one
``python -m pytest -q`` runs the whole suite compiled and a fast subset that covers every
request path (callback fast path, coroutine path, in-process client) pure; ``compiled`` or
``pure`` runs every test on that one.

The compiled build is made once, after collection and before the first test (outside any
test's timeout), with the runtime's own builder (``python DIST --accelerate`` does the same)
into the machine's cache keyed by the runtime's source hash (``MESHGEN_CACHE_DIR``), so a
re-run of an unchanged runtime finds it. Each test's children get ``MESHGEN_RUNTIME=compiled``
or ``pure``: a runtime told ``compiled`` that cannot load its build refuses to start, and
``runtime_harness.run_dist`` checks the ready file says which one runs, so a silent fallback
fails the test. A build that fails fails every compiled test under ``CI=true``; elsewhere they
run pure and the summary says why (a skip would skip the whole suite).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshgen.resources import runtime_dir
from meshgen.runtime.accelerate import BuildError, build

IN_CI = os.environ.get("CI", "").lower() == "true"
WANTED = os.environ.get("MESHGEN_RUNTIME", "") or "auto"
PURE_SUBSET = ("test_differential.py", "test_proxy_fastpath.py", "test_client.py")
"""Modules that run the pure runtime in the default split."""
_BUILD: dict[str, str] = {}  # "folder" or "error", and "seconds"


E2E = Path(__file__).parent / "e2e"


def _e2e(path: Path) -> bool:
    return path.parent == E2E


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the compiled runtime once, if any collected end-to-end test runs it."""
    if WANTED == "pure" or not any(_e2e(item.path) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("compiling the runtime with mypyc (once per runtime source) ...")
    started = time.monotonic()
    try:
        _BUILD["folder"] = str(build(runtime_dir()))
    except (BuildError, OSError) as exc:
        _BUILD["error"] = str(exc)
    _BUILD["seconds"] = f"{time.monotonic() - started:.0f}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "error" in _BUILD:
        terminalreporter.write_line(f"compiled runtime NOT built, e2e ran pure: {_BUILD['error']}")
    elif "folder" in _BUILD:
        where, took = _BUILD["folder"], _BUILD["seconds"]
        terminalreporter.write_line(f"e2e runtime: compiled ({where}, {took} s to find/build)")


@pytest.fixture(autouse=True, scope="module")
def runtime_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """``compiled`` or ``pure``, exported as ``MESHGEN_RUNTIME`` to every child the module's
    tests and fixtures start (module scope: set before any module-scoped server starts)."""
    pure = not _e2e(request.path) or request.path.name in PURE_SUBSET
    kind = "pure" if WANTED == "pure" or (WANTED == "auto" and pure) else "compiled"
    if kind == "compiled" and "error" in _BUILD:
        if IN_CI:
            pytest.fail(f"CI=true and the compiled runtime did not build: {_BUILD['error']}")
        kind = "pure"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MESHGEN_RUNTIME", kind)
        yield kind
