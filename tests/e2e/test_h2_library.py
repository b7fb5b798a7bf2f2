"""Which HTTP/2 library the runtime really runs on: ``jh2`` when it is installed, else ``h2``
(``codec/h2lib.py``). CI runs the suite on ``h2`` and a smoke subset again with ``jh2``
installed (.ci/run); ``MESHGEN_EXPECT_H2_LIBRARY`` names the library that run must be on, so a
shim that silently fell back to the other one fails here instead of passing the smoke subset
on the wrong library. Unset, the expectation is the shim's rule: ``jh2`` if importable.
"""

from __future__ import annotations

import importlib.util
import os
import re
import types
from pathlib import Path

import h2_peer
import pytest
from h2_peer import Peer
from runtime_harness import SERVE_HANDLER

from meshgen.runtime.codec import h2lib

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

EXPECTED = os.environ.get("MESHGEN_EXPECT_H2_LIBRARY") or (
    "jh2" if importlib.util.find_spec("jh2") is not None else "h2"
)
BACKEND = (
    r"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
"""
    + SERVE_HANDLER
)


def test_expectation_names_a_library() -> None:
    assert EXPECTED in ("h2", "jh2"), f"MESHGEN_EXPECT_H2_LIBRARY={EXPECTED!r}: h2 or jh2"


LIBRARY_MODULES = [n for n in h2lib.__all__ if isinstance(getattr(h2lib, n), types.ModuleType)]


def test_the_shim_exports_library_modules() -> None:
    assert {"config", "connection", "errors", "events", "exceptions", "settings"} <= set(
        LIBRARY_MODULES
    )


@pytest.mark.parametrize("module", LIBRARY_MODULES)
def test_the_shim_exports_the_expected_library(module: str) -> None:
    """Every library module the runtime's HTTP/2 code (server, client, gRPC probe) uses comes
    from one library (the shim's own helpers work on whichever it is)."""
    assert getattr(h2lib, module).__name__ == f"{EXPECTED}.{module}"


def test_the_running_runtime_loaded_the_expected_library(tmp_path: Path) -> None:
    """The runtime process (compiled in the e2e suite) that just served an HTTP/2 request has
    jh2's compiled core mapped exactly when jh2 is expected (``h2`` is pure Python: the shim's
    only other choice)."""
    with h2_peer.proxied(tmp_path, BACKEND) as rt:
        peer = Peer(rt.port)
        try:
            answer = peer.get("/", "web")
        finally:
            peer.close()
        assert (answer.status, bytes(answer.body)) == (200, b"ok\n")
        maps = Path(f"/proc/{rt.proc.pid}/maps").read_text()
    loaded = re.search(r"/jh2/_hazmat[^/\n]*\.so$", maps, re.M) is not None
    assert loaded == (EXPECTED == "jh2"), f"expected {EXPECTED}; jh2 mapped: {loaded}"
