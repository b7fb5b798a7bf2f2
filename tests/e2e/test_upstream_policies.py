"""Upstream policies end to end on `python DIST` (and HAProxy where both must agree).

- Outlier detection ejects the one bad endpoint of a 3-endpoint service even with the default
  `max_ejection_percent: 10` (as Envoy: at least one may always be ejected).
- A route's own `retries.budget` is a pool of its own, whatever the route order: it neither
  limits nor is limited by the service's pool.
- Zone failover with no qualifying zone uses every healthy endpoint of the service (any zone or
  none) on both engines.
- A reload (SIGHUP) carries the health and ejection state of endpoints that stay.
"""

from __future__ import annotations

import signal
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
from haproxy_harness import Engine, poll, run_haproxy, run_runtime
from ports import refused_port
from runtime_harness import SERVE_HANDLER, backend, build_dist, run_dist, script_backend, spec
from test_proxy_semantics import count

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RESETTER = """
import socket, struct
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"""
"""A backend that resets every connection after reading the request (RST, no answer)."""


def test_small_service_ejects_its_resetting_endpoint(tmp_path: Path) -> None:
    """3 endpoints, one resets every request, default max_ejection_percent (10): after
    consecutive_5xx resets it is ejected and every later request succeeds."""
    with ExitStack() as stack:
        good = [stack.enter_context(backend(n))[0] for n in ("g1", "g2")]
        bad, _ = stack.enter_context(script_backend(RESETTER))
        text = spec(
            f"""
            services:
              web:
                discovery: {{static: [{{address: "{good[0]}"}}, {{address: "{bad}"}},
                                      {{address: "{good[1]}"}}]}}
                outlier_detection: {{consecutive_5xx: 3, base_ejection_time: 1m}}
            """
        )
        rt = stack.enter_context(run_dist(build_dist(tmp_path / "dist", text)))
        first = Counter(rt.request("GET", "/", "web")[0] for _ in range(9))
        assert first == Counter({200: 6, 502: 3}), first
        later = Counter(rt.request("GET", "/", "web")[0] for _ in range(30))
        assert later == Counter({200: 30}), later
        assert count(rt, "meshgen_ejections_total", service="web", endpoint=bad) == 1
        assert count(rt, "meshgen_endpoint_healthy", service="web", endpoint=bad) == 0


def test_route_budget_is_its_own_pool_whatever_the_order(tmp_path: Path) -> None:
    """`tight` (first, own budget: 1 retry per 10 s window) does not limit `loose`, which draws
    from the service's pool (10/s): every loose request is retried once, tight ones once in all."""
    with backend("web") as (web, _):
        text = spec(
            f"""
            services:
              web:
                discovery: {{static: [{{address: "{web}"}}]}}
                retries: {{attempts: 1, on: [5xx]}}
            routes:
              - name: tight
                match: {{host: web, path_prefix: /tight}}
                to: [{{service: web}}]
                retries: {{budget: {{ratio: 0, min_per_second: 0.1}}}}
              - name: loose
                match: {{host: web}}
                to: [{{service: web}}]
            """
        )
        with run_dist(build_dist(tmp_path / "dist", text)) as rt:
            fail = {"x-status": "503"}
            assert {rt.request("GET", "/loose", "web", fail)[0] for _ in range(5)} == {503}
            assert count(rt, "meshgen_retries_total", service="web") == 5
            assert {rt.request("GET", "/tight", "web", fail)[0] for _ in range(5)} == {503}
            assert count(rt, "meshgen_retries_total", service="web") == 6
            assert {rt.request("GET", "/loose", "web", fail)[0] for _ in range(3)} == {503}
            assert count(rt, "meshgen_retries_total", service="web") == 9


ZONES = """\
version: 1
mesh: {{name: shop}}
services:
  web:
    discovery:
      static:
        - {{address: "{a1}", zone: a}}
        - {{address: "{dead_a}", zone: a}}
        - {{address: "{b1}", zone: b}}
        - {{address: "{dead_b}", zone: b}}
        - {{address: "{n1}"}}
        - {{address: "{u1}", zone: c}}
    health_check: {{tcp: {{}}, interval: 200ms, timeout: 500ms, unhealthy_threshold: 1}}
    failover: {{zones: [a, b], panic_threshold: 60}}
routes:
  - {{name: web, match: {{host: web}}, to: [{{service: web}}]}}
listeners: [{{name: edge, address: "127.0.0.1:0"}}]
admin: 127.0.0.1:0
"""


def _spread(engine: Engine, n: int = 24) -> set[str]:
    return {engine.request("/", "web")[1].get("x-backend", "") for _ in range(n)}


def test_no_qualifying_zone_uses_every_healthy_endpoint(tmp_path: Path) -> None:
    """Zones a and b are each 50 % healthy (< 60): both engines use a1, b1, the zone-less n1 and
    the unlisted-zone u1 alike, not only the endpoints outside the listed zones."""
    with ExitStack() as stack:
        names = ("a1", "b1", "n1", "u1")
        addrs = {n: stack.enter_context(backend(n))[0] for n in names}
        # a port nothing listens on: connects fail, so does the tcp check
        closed = {
            n: f"127.0.0.1:{stack.enter_context(refused_port())}" for n in ("dead_a", "dead_b")
        }
        folder = tmp_path / "mesh"
        folder.mkdir()
        dist = build_dist(folder / "dist", ZONES.format(**addrs, **closed))
        engines = [stack.enter_context(run_runtime(dist)), stack.enter_context(run_haproxy(dist))]
        for e in engines:
            poll(lambda e=e: _spread(e) == set(names), what=f"{e.name}: every healthy endpoint")
            counts = Counter(e.request("/", "web")[1].get("x-backend", "") for _ in range(80))
            assert set(counts) == set(names) and min(counts.values()) >= 8, (e.name, counts)


SICK = (
    """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = 503 if self.path == "/healthz" else 200
        self.send_response(status)
        self.send_header("content-length", "0")
        self.send_header("x-backend", "sick")
        self.end_headers()
    def log_message(self, *a): pass
"""
    + SERVE_HANDLER
)
"""Fails its health check (503 on /healthz) but answers traffic: any request it gets shows."""


def test_reload_keeps_known_dead_and_ejected_endpoints_out(tmp_path: Path) -> None:
    """`sick` is down by health check and `rst` ejected by outlier detection; after SIGHUP the
    new generation sends neither a single request (their state is carried over)."""
    with ExitStack() as stack:
        g1, _ = stack.enter_context(backend("g1"))
        g2, _ = stack.enter_context(backend("g2"))
        sick, _ = stack.enter_context(script_backend(SICK))
        rst, _ = stack.enter_context(script_backend(RESETTER))
        text = spec(
            f"""
            services:
              web:
                discovery: {{static: [{{address: "{g1}"}}, {{address: "{sick}"}}]}}
                health_check: {{http: {{path: /healthz}}, interval: 1s, unhealthy_threshold: 2}}
              flaky:
                discovery: {{static: [{{address: "{g2}"}}, {{address: "{rst}"}}]}}
                outlier_detection: {{consecutive_5xx: 2, base_ejection_time: 1m}}
            """
        )
        rt = stack.enter_context(run_dist(build_dist(tmp_path / "dist", text)))
        poll(lambda: count(rt, "meshgen_endpoint_healthy", endpoint=sick) == 0, what="sick down")

        def ejected() -> bool:
            rt.request("GET", "/", "flaky")
            return count(rt, "meshgen_ejections_total", endpoint=rst) == 1

        poll(ejected, what="rst ejected")
        rt.proc.send_signal(signal.SIGHUP)
        poll(lambda: "reloaded" in rt.log_text(), what="reload")
        seen: Counter[tuple[str, int, str | None]] = Counter()
        for _ in range(30):
            for host in ("web", "flaky"):
                status, headers, _ = rt.request("GET", "/", host)
                seen[(host, status, headers.get("x-backend"))] += 1
        assert seen == Counter({("web", 200, "g1"): 30, ("flaky", 200, "g2"): 30}), seen
        assert count(rt, "meshgen_endpoint_healthy", endpoint=sick) == 0
        assert count(rt, "meshgen_endpoint_healthy", endpoint=rst) == 0
