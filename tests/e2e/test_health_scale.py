"""Active health checks at a bounded scale: 300 real endpoints (one nginx, 300 ports), 1 s interval.

- No healthy endpoint is ever marked down.
- Probes are spread: the endpoints' phases in the interval cover every 100 ms of it evenly (the
  old scheduler sent all first probes within the first tenth of the interval, in lockstep).
- Each endpoint's probes reuse one keep-alive connection.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from conftest import require_binary
from many_backends import many_port_nginx, read_log
from runtime_harness import build_dist, run_dist, spec
from test_proxy_semantics import samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVICES, PER_SERVICE = 30, 10


def health_mesh(ports: list[int], interval: str = "1s", check: bool = True) -> str:
    """``len(ports) / per_service`` services of ``per_service`` endpoints each, default routes."""
    per = len(ports) // SERVICES
    lines = ["services:"]
    for i in range(SERVICES):
        eps = ", ".join(f'{{address: "127.0.0.1:{p}"}}' for p in ports[i * per : (i + 1) * per])
        lines.append(f"  svc-{i}:")
        lines.append(f"    discovery: {{static: [{eps}]}}")
        if check:
            lines.append(f"    health_check: {{http: {{path: /healthz}}, interval: {interval}}}")
    return "\n".join(lines) + "\n"


def phase(times: list[float]) -> float:
    """Circular mean of ``times`` modulo 1 s, in [0, 1)."""
    angles = [2 * math.pi * (t % 1.0) for t in times]
    mean = math.atan2(sum(map(math.sin, angles)), sum(map(math.cos, angles)))
    fraction = (mean / (2 * math.pi)) % 1.0
    # A mean a hair below zero wraps to exactly 1.0 in floating point (-1e-17 % 1.0 == 1.0).
    return 0.0 if fraction >= 1.0 else fraction


def test_three_hundred_endpoints_stay_up_spread_and_on_one_connection(tmp_path: Path) -> None:
    nginx = require_binary("nginx")
    with many_port_nginx(nginx, tmp_path / "nginx", SERVICES * PER_SERVICE) as ports:
        dist = build_dist(tmp_path / "dist", spec(health_mesh(ports)))
        with run_dist(dist) as rt:
            time.sleep(4.6)
            healthy = [v for lab, v in samples(rt, "meshgen_endpoint_healthy")]
            log = rt.log_text()
        hits = [h for h in read_log(tmp_path / "nginx")[0] if h.agent == "meshgen-health"]
    assert len(healthy) == len(ports) and set(healthy) == {1.0}
    assert "is DOWN" not in log, log[-2000:]
    # The probe connections opened after start-up are frozen too (else every full collection
    # walks them: a gap in the schedule at 10,000 endpoints).
    assert "heap settled after the first health checks" in log, log[-2000:]
    assert len(hits) >= 3 * len(ports), len(hits)  # about one probe per endpoint per second
    times: defaultdict[int, list[float]] = defaultdict(list)
    for h in hits:
        times[h.port].append(h.time)
    # Each endpoint's phase in the 1 s interval (circular mean: a probe the loop delayed moves
    # it by a fraction only); the phases must cover the interval evenly.
    phases = [phase(ts) for ts in times.values()]
    buckets = Counter(int(p * 10) for p in phases)
    assert len(buckets) == 10 and all(15 <= n <= 45 for n in buckets.values()), buckets
    connections: defaultdict[int, set[int]] = defaultdict(set)
    for h in hits:
        connections[h.port].add(h.connection)
    assert len(connections) == len(ports)
    assert {len(c) for c in connections.values()} == {1}
