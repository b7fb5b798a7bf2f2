"""examples/grpc runs end to end exactly as its README says (readme_steps.py): three grpcio
servers, the embedded runtime, and the client's counts, each line's output checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from readme_steps import run_readme

from tests.conftest import Process

pytest.importorskip("grpc", reason="grpcio not installed: pip install '.[test]'")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
PORTS = ("9091", "9092", "9093", "15001", "15000")


def test_readme_steps(tmp_path: Path, processes: Callable[..., Process]) -> None:
    run_readme("grpc", tmp_path / "grpc", PORTS, processes, started_count=4, checked_count=5)
