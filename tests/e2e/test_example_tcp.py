"""examples/tcp runs end to end exactly as its README says.

The README's first ``sh`` block is the setup: its ``meshgen ...`` lines run as this checkout's
meshgen, its background lines (``... &``: Redis, two ``openssl s_server``, ``python dist``) are
started as processes. Every fixed port of the example is replaced by a free one, in a copy of
mesh.yaml and in the commands alike. The second block is run line by line in bash (its
function definitions first), and each line's output must be what its comment says.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from readme_steps import run_readme

from tests.conftest import Process, require_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
PORTS = ("6390", "8443", "9443", "16379", "15443", "15000")


def test_readme_steps(tmp_path: Path, processes: Callable[..., Process]) -> None:
    for binary in ("redis-server", "redis-cli", "openssl", "curl"):
        require_binary(binary)
    run_readme("tcp", tmp_path / "tcp", PORTS, processes, started_count=4, checked_count=9)
