"""The /status page in headless Chromium: it renders, shows live state, and refreshes itself.

The admin server runs in a thread of this process (its own event loop) with hand-fed
metrics; Chromium runs as a real process, dumps the DOM after JavaScript-free rendering and
saves a screenshot to test-artifacts/status-page.png (gitignored) for a person to look at.
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

from meshgen.runtime.admin import AdminServer, start_admin
from meshgen.runtime.alerts import AlertEvaluator
from meshgen.runtime.metrics import Metrics
from meshgen.runtime.tables import (
    Alert,
    Cluster,
    DnsDiscovery,
    Endpoint,
    MeshInfo,
    StaticDiscovery,
    Tables,
)

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def make_tables() -> Tables:
    reviews = StaticDiscovery(
        (Endpoint("127.0.0.1", 9081, zone="a"), Endpoint("::1", 9082, weight=3, zone="b"))
    )
    return Tables(
        mesh=MeshInfo("shop", "mesh.test"),
        clusters=(
            Cluster("reviews", reviews),
            Cluster("ratings", DnsDiscovery("_http._tcp.ratings.mesh.test")),
        ),
        routes=(),
        listeners=(),
    )


class Snapshot:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        return self.state


@pytest.fixture
def admin() -> Iterator[tuple[AdminServer, Metrics, Snapshot]]:
    """An admin server on 127.0.0.1:0 in a background event loop."""
    tables = make_tables()
    down = Alert("reviews-degraded", "reviews", "healthy_ratio", "<", 0.75, 0.0, "page",
                 "half of reviews is down")  # fmt: skip
    metrics, upstreams = Metrics(), Snapshot()
    evaluator = AlertEvaluator([down], [])
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
    for _ in range(7):
        metrics.observe_request("edge", "reviews", "reviews", "v1", 200, 0.02)
    metrics.observe_request("edge", "reviews", "reviews", "v1", 503, 0.02)
    loop.call_soon_threadsafe(evaluator.step, 1_700_000_000.0, metrics.collect())
    upstreams.state = {
        "reviews": {
            "discovery": {"kind": "static", "ok": True, "last_error": None},
            "endpoints": [
                {"address": "127.0.0.1:9081", "zone": "a", "weight": 1, "labels": {},
                 "healthy": True, "ejected": False, "in_flight": 2},
                {"address": "[::1]:9082", "zone": "b", "weight": 3, "labels": {},
                 "healthy": False, "ejected": True, "in_flight": 0},
            ],
        },
        "ratings": {
            "discovery": {"kind": "dns", "ok": False, "last_error": "SERVFAIL"},
            "endpoints": [],
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


def test_status_page_in_chromium(
    admin: tuple[AdminServer, Metrics, Snapshot], tmp_path: Path
) -> None:
    """Chromium renders every service, endpoint state, circuit state and the firing alert."""
    server, _, _ = admin
    url = f"http://{server.bound_address}/status"
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert re.search(r"<title>meshgen shop status</title>", html)
    assert 'data-service="reviews"' in html and 'data-service="ratings"' in html
    assert re.search(r'data-endpoint="127\.0\.0\.1:9081" data-healthy="true"', html)
    assert re.search(r'data-endpoint="\[::1\]:9082" data-healthy="false" data-ejected="true"', html)
    assert re.search(r'id="service-ratings"[^>]*data-circuit="open"', html)
    assert 'data-alert="reviews-degraded" data-state="firing"' in html
    assert "SERVFAIL" in html and "requests 8 (5xx 1)" in html
    assert 'http-equiv="refresh"' in html

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_status_page_reflects_changes_on_reload(
    admin: tuple[AdminServer, Metrics, Snapshot], tmp_path: Path
) -> None:
    """The page is rebuilt per request: a recovered endpoint shows healthy on the next load."""
    server, _, upstreams = admin
    upstreams.state["reviews"]["endpoints"][1].update(healthy=True, ejected=False)
    dom = _chromium(tmp_path, "--dump-dom", f"http://{server.bound_address}/status")
    assert re.search(r'data-endpoint="\[::1\]:9082" data-healthy="true" data-ejected="false"',
                     dom.stdout)  # fmt: skip
