"""examples/grpc runs end to end exactly as its README says (readme_steps.py): three grpcio
servers, the embedded runtime, and the client's counts, each line's output checked; and the
same on Envoy, as the README's Envoy steps say."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from readme_steps import run_readme

from tests.conftest import Process, require_binary

pytest.importorskip("grpc", reason="grpcio not installed: pip install '.[test]'")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
PORTS = ("9091", "9092", "9093", "15001", "15000")


def test_readme_steps(tmp_path: Path, processes: Callable[..., Process]) -> None:
    run_readme("grpc", tmp_path / "grpc", PORTS, processes, started_count=4, checked_count=5)


def test_readme_steps_on_envoy(tmp_path: Path, processes: Callable[..., Process]) -> None:
    """The README's Envoy steps instead of ``python dist &``: once every server listens, Envoy
    starts with every endpoint healthy, so the first 40 calls all succeed (no retrying of the
    first call while health checks settle, unlike on the runtime)."""
    readme = (Path(__file__).resolve().parents[2] / "examples/grpc/README.md").read_text()
    alternative = re.search(r"^```text\n(.*?)^```", readme, re.M | re.S)
    assert alternative is not None
    steps = [ln for ln in alternative[1].splitlines() if not ln.startswith("haproxy ")]
    assert steps[0].startswith("for port in") and steps[1].startswith("envoy -c"), steps
    steps[1] = require_binary("envoy") + steps[1].removeprefix("envoy")  # maybe not on PATH
    run_readme("grpc", tmp_path / "grpc", PORTS, processes, started_count=4, checked_count=5,
               replace={"python dist &": steps}, retry_first=False)  # fmt: skip
