"""The /status page in headless Chromium: it renders, shows live state truthfully, refreshes.

Two set-ups. One admin server runs in a thread of this process with hand-fed metrics and an
alert evaluator stepped at fixed times, so rates, the 5xx share, p99 and SLO budgets are known
exactly. The other is a real ``python DIST`` whose service has no health check and whose two
endpoints refuse connections: the page must call them failing ("0 of 2 serving"), not healthy.
Chromium runs as a real process, dumps the DOM after JavaScript-free rendering and saves
screenshots to test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_binary
from ports import refused_port
from runtime_harness import build_dist, run_dist, spec

from meshgen.runtime.observe.admin import AdminServer, start_admin
from meshgen.runtime.observe.alerts import AlertEvaluator
from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.tables import (
    Alert,
    BurnWindow,
    Cluster,
    DnsDiscovery,
    Endpoint,
    Listener,
    Match,
    MeshInfo,
    Mirror,
    Route,
    Slo,
    StaticDiscovery,
    Tables,
    Target,
)

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
T0 = 1_700_000_000.0
PAGE = (BurnWindow(3600.0, 300.0, 14.4), BurnWindow(21600.0, 1800.0, 6.0))
TICKET = (BurnWindow(86400.0, 7200.0, 3.0), BurnWindow(259200.0, 21600.0, 1.0))


def make_tables() -> Tables:
    reviews = StaticDiscovery(
        (Endpoint("127.0.0.1", 9081, zone="a"), Endpoint("::1", 9082, weight=3, zone="b"))
    )
    payments = StaticDiscovery((Endpoint("127.0.0.1", 9091), Endpoint("127.0.0.1", 9092)))
    split = (
        Target("reviews", "v1", 90, 15.0, 60.0, None),
        Target("reviews", "v3", 10, 15.0, 60.0, None),
    )
    return Tables(
        mesh=MeshInfo("shop", "mesh.test"),
        clusters=(
            Cluster("reviews", reviews),
            Cluster("ratings", DnsDiscovery("_http._tcp.ratings.mesh.test")),
            Cluster("payments", payments),
        ),
        routes=(
            Route("reviews-split", Match(("reviews",)), split, mirror=Mirror("reviews", "v2", 5)),
            Route("payments", Match(), (Target("payments", None, 100, 15.0, 60.0, None),)),
        ),
        listeners=(Listener("edge", "127.0.0.1", 0, ("reviews-split", "payments")),),
        slos=(Slo("reviews-availability", "reviews", 90.0, 30 * 86400.0, PAGE, TICKET),),
    )


class Snapshot:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        return self.state


def _endpoint(address: str, health: str, ejected: bool = False) -> dict[str, Any]:
    healthy = health != "failing" and not ejected
    return {"address": address, "zone": None, "weight": 1, "labels": {}, "health": health,
            "healthy": healthy, "ejected": ejected, "in_flight": 0}  # fmt: skip


def _traffic(metrics: Metrics, ok: int, errors: int) -> None:
    for _ in range(ok):
        metrics.observe_request("edge", "reviews-split", "reviews", "v1", 200, 0.02)
        metrics.inc_upstream("reviews", "127.0.0.1:9081", 200)
    for _ in range(errors):
        metrics.observe_request("edge", "reviews-split", "reviews", "v1", 503, 0.02)


@pytest.fixture
def admin() -> Iterator[tuple[AdminServer, Metrics, Snapshot]]:
    """An admin server on 127.0.0.1:0 in a background event loop, its evaluator stepped at
    T0 - 15 s and T0 (the page reads at T0 + 1 s)."""
    tables = make_tables()
    down = Alert("reviews-degraded", "reviews", "healthy_ratio", "<", 0.75, 0.0, "page",
                 "half of reviews is down")  # fmt: skip
    metrics, upstreams = Metrics(), Snapshot()
    evaluator = AlertEvaluator([down], tables.slos, clock=lambda: T0 + 1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        start_admin("127.0.0.1", 0, tables_provider=lambda: tables,
                    upstreams_provider=lambda: upstreams, metrics=metrics, alerts=evaluator),
        loop,
    ).result(10)  # fmt: skip
    metrics.set_endpoint_healthy("reviews", "127.0.0.1:9081", True)
    metrics.set_endpoint_healthy("reviews", "[::1]:9082", False)
    metrics.set_circuit_open("ratings", True)
    _traffic(metrics, ok=3, errors=1)
    loop.call_soon_threadsafe(evaluator.step, T0 - 15, metrics.collect())
    _traffic(metrics, ok=12, errors=4)  # +16 requests, 4 of them 503: a 25% 5xx share
    for _ in range(3):  # payments has no health check; its endpoints refuse connections
        metrics.inc_upstream("payments", "127.0.0.1:9091", "connect-failure")
        metrics.inc_upstream("payments", "127.0.0.1:9092", "connect-failure")
    loop.call_soon_threadsafe(evaluator.step, T0, metrics.collect())
    upstreams.state = {
        "reviews": {
            "discovery": {"kind": "static", "ok": True, "last_error": None},
            "endpoints": [_endpoint("127.0.0.1:9081", "passing"),
                          _endpoint("[::1]:9082", "passing", ejected=True)],
        },
        "ratings": {
            "discovery": {"kind": "dns", "ok": False, "last_error": "SERVFAIL"},
            "endpoints": [],
        },
        "payments": {
            "discovery": {"kind": "static", "ok": True, "last_error": None},
            "endpoints": [_endpoint("127.0.0.1:9091", "unchecked"),
                          _endpoint("127.0.0.1:9092", "unchecked")],
        },
    }  # fmt: skip
    try:
        yield server, metrics, upstreams
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("chromium")
    argv = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def _dom(tmp_path: Path, url: str) -> str:
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def _screenshot(tmp_path: Path, url: str, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1400", url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def _attr(html: str, element: str, name: str) -> str:
    found = re.search(rf"{element}[^>]*?\b{name}=\"([^\"]*)\"", html)
    assert found, f"{element} has no {name}"
    return found.group(1)


def test_status_page_in_chromium(
    admin: tuple[AdminServer, Metrics, Snapshot], tmp_path: Path
) -> None:
    """Routes with their split, per-service rates and SLO budget, endpoint verdicts from every
    signal (health check, ejection, recent tries) and the firing alert, as Chromium renders."""
    server, _, _ = admin
    url = f"http://{server.bound_address}/status"
    html = _dom(tmp_path, url)
    assert re.search(r"<title>meshgen shop status</title>", html)
    # routes and splits
    split = re.search(r'data-route="reviews-split".*?</tr>', html, re.DOTALL)
    assert split and "reviews/v1 90%" in split.group(0) and "reviews/v3 10%" in split.group(0)
    assert "mirror reviews/v2 5%" in split.group(0) and "edge" in split.group(0)
    # rates of reviews: 16 requests in the window, 4 of them 503; 20 ms requests -> p99 in
    # the (10 ms, 25 ms] bucket
    reviews = 'id="service-reviews"'
    assert float(_attr(html, reviews, "data-error-rate")) == 0.25
    assert float(_attr(html, reviews, "data-request-rate")) > 0
    assert 0.01 < float(_attr(html, reviews, "data-p99")) <= 0.025
    assert "5xx 25%" in html
    # SLO 90%: budget 10%, 25% spent -> 1 - 2.5 = -150% left
    assert float(_attr(html, 'data-slo="reviews-availability"', "data-budget-left")) == -1.5
    # endpoint verdicts
    assert re.search(r'data-endpoint="127\.0\.0\.1:9081" data-verdict="healthy"', html)
    assert re.search(r'data-endpoint="\[::1\]:9082" data-verdict="failing"[^>]*data-ejected="true"',
                     html)  # fmt: skip
    for port in (9091, 9092):  # no health check, every try refused: failing, not healthy
        row = rf'data-endpoint="127\.0\.0\.1:{port}" data-verdict="failing" data-health="unchecked"'
        assert re.search(row + r'[^>]*data-failed="3" data-tries="3"', html)
    assert _attr(html, 'id="service-payments"', "data-serving") == "0"
    assert "0 of 2 serving" in html and "1 of 2 serving" in html
    assert re.search(r'id="service-ratings"[^>]*data-circuit="open"', html)
    assert 'data-alert="reviews-degraded" data-state="firing"' in html
    assert "SERVFAIL" in html and 'http-equiv="refresh"' in html
    _screenshot(tmp_path, url, "status-page.png")


def test_status_page_reflects_changes_on_reload(
    admin: tuple[AdminServer, Metrics, Snapshot], tmp_path: Path
) -> None:
    """The page is rebuilt per request: a recovered endpoint shows healthy on the next load."""
    server, _, upstreams = admin
    upstreams.state["reviews"]["endpoints"][1].update(healthy=True, ejected=False)
    html = _dom(tmp_path, f"http://{server.bound_address}/status")
    assert re.search(r'data-endpoint="\[::1\]:9082" data-verdict="healthy"', html)
    assert "2 of 2 serving" in html


def test_a_service_whose_endpoints_refuse_connections_shows_failing(tmp_path: Path) -> None:
    """A real runtime, a service with no health check and two endpoints nobody listens on:
    after a few requests (503s), /status calls both endpoints failing and the service
    "0 of 2 serving" at once, without waiting for an evaluation."""
    with refused_port() as one, refused_port() as two:
        _refused_endpoints_fail(tmp_path, [one, two])


def _refused_endpoints_fail(tmp_path: Path, closed: list[int]) -> None:
    dist = build_dist(tmp_path / "dist", spec(f"""
        services:
          dead:
            discovery:
              static: [{{address: "127.0.0.1:{closed[0]}"}}, {{address: "127.0.0.1:{closed[1]}"}}]
        routes: [{{name: dead, match: {{host: dead}}, to: [{{service: dead}}]}}]
        """))  # fmt: skip
    with run_dist(dist) as rt:
        for _ in range(4):
            assert rt.request("GET", "/", "dead")[0] == 503
        url = f"http://{rt.ready['admin']}/status"
        html = _dom(tmp_path, url)
        assert _attr(html, 'id="service-dead"', "data-serving") == "0"
        assert _attr(html, 'id="service-dead"', "data-total") == "2"
        for port in closed:
            row = re.search(rf'data-endpoint="127\.0\.0\.1:{port}"[^>]*>', html)
            assert row, html[-3000:]
            assert 'data-verdict="failing"' in row.group(0)
            assert 'data-health="unchecked"' in row.group(0)
        assert "connect-failure" in html and "0 of 2 serving" in html
        _screenshot(tmp_path, url, "status-page-refused.png")
