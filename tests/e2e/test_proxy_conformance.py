"""HTTP conformance and metric-series details of `python DIST` and the in-process client.

- Absolute-form targets route by the URL's authority, not the Host header (RFC 9112 3.2.2),
  and go upstream in origin-form with that authority as Host.
- An invalid or (HTTP/1.1, origin-form) empty Host is a 400 (RFC 9112 3.2).
- The rare-event series (circuit open, retries, 429s) exist at 0 from the start and end when a
  reload removes their service or route.
- The client queues at the circuit breaker like the proxy instead of refusing.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_binary
from polling import eventually
from runtime_harness import Runtime, backend, build_dist, compile_tables, run_dist, spec
from test_proxy_semantics import samples

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with backend("web") as (web, _):
        text = spec(
            f"""
            services:
              web: {{discovery: {{static: [{{address: "{web}"}}]}}}}
            routes:
              - name: renamed
                match: {{host: web, path_prefix: /renamed}}
                to: [{{service: web}}]
                rewrite: {{host: web.internal}}
              - name: web
                match: {{host: web}}
                to: [{{service: web}}]
            """
        )
        dist = build_dist(tmp_path_factory.mktemp("conformance") / "dist", text)
        with run_dist(dist) as rt:
            yield rt


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    pairs = (line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in pairs}, body


def test_absolute_form_routes_by_authority(proxy: Runtime) -> None:
    """`GET http://web/x` with `Host: nowhere` reaches web as `GET /x` with `Host: web`."""
    raw = proxy.raw(b"GET http://web/x?q=1 HTTP/1.1\r\nHost: nowhere\r\nConnection: close\r\n\r\n")
    status, headers, body = _response(raw)
    assert status == 200, raw[:300]
    assert body == b"web GET /x?q=1\n"
    assert headers["echo-host"] == "web"
    raw = proxy.raw(b"GET http://Web:8080 HTTP/1.1\r\nHost: nowhere\r\nConnection: close\r\n\r\n")
    status, headers, body = _response(raw)
    assert (status, body, headers["echo-host"]) == (200, b"web GET /\n", "Web:8080")


def test_absolute_form_ignores_the_host_header(proxy: Runtime) -> None:
    """`GET http://nowhere/x` with `Host: web` is not routed by Host: 404 naming the authority."""
    raw = proxy.raw(b"GET http://nowhere/x HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    status, _, body = _response(raw)
    assert status == 404 and b"nowhere" in body, raw[:300]


def test_absolute_form_keeps_rewrite_host(proxy: Runtime) -> None:
    """rewrite.host still replaces the authority upstream."""
    raw = proxy.raw(b"GET http://web/renamed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = _response(raw)
    assert status == 200 and headers["echo-host"] == "web.internal"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: we\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: web:80x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET http://user@web/ HTTP/1.1\r\nHost: web\r\n\r\n",
        b"GET http:/// HTTP/1.1\r\nHost: web\r\n\r\n",
        b"GET http://web/ HTTP/1.1\r\nHost: a b\r\n\r\n",
    ],
    ids=["space", "control", "bad-port", "empty", "userinfo", "empty-authority", "absolute-bad"],
)
def test_invalid_host_is_400(proxy: Runtime, raw: bytes) -> None:
    """RFC 9112 3.2: an invalid Host value (or authority) gets 400 and the connection closes."""
    out = proxy.raw(raw + b"GET /second HTTP/1.1\r\nHost: web\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert b"/second" not in out


def test_valid_hosts_still_route(proxy: Runtime) -> None:
    """IP literals, ports and the HTTP/1.0 Host-less form stay accepted."""
    for host in ("web", "web:1", "WEB.", "[::1]:80", "127.0.0.1"):
        status = proxy.request("GET", "/", host)[0]
        assert status == (200 if host.lower().startswith("web") else 404), host
    out = proxy.raw(b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404"), out[:200]


# --- rare-event series from the start --------------------------------------------------------

SERIES = """
services:
  limited: {{discovery: {{static: [{{address: "{a}"}}]}}, rate_limit: {{requests_per_second: 9}}}}
  plain: {{discovery: {{static: [{{address: "{a}"}}]}}}}
routes:
  - name: own-limit
    match: {{host: plain, path_prefix: /own}}
    to: [{{service: plain}}]
    rate_limit: {{requests_per_second: 9}}
  - name: to-limited
    match: {{host: limited}}
    to: [{{service: limited}}]
  - name: plain
    match: {{host: plain}}
    to: [{{service: plain}}]
"""

RELOADED = """
services:
  plain: {{discovery: {{static: [{{address: "{a}"}}]}}}}
  fresh: {{discovery: {{static: [{{address: "{a}"}}]}}}}
routes:
  - name: plain
    match: {{host: plain}}
    to: [{{service: plain}}]
    rate_limit: {{requests_per_second: 9}}
  - name: fresh
    match: {{host: fresh}}
    to: [{{service: fresh}}]
"""


def _series(rt: Runtime, name: str, label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples(rt, name)}


def test_rare_event_series_exist_from_start_and_follow_reloads(tmp_path: Path) -> None:
    with backend("a") as (a, _):
        dist = build_dist(tmp_path / "dist", spec(SERIES.format(a=a)))
        with run_dist(dist) as rt:
            services = {"limited": 0.0, "plain": 0.0}
            assert _series(rt, "meshgen_circuit_open", "service") == services
            assert _series(rt, "meshgen_retries_total", "service") == services
            limited = {"own-limit": 0.0, "to-limited": 0.0}  # `plain` can never answer 429
            assert _series(rt, "meshgen_rate_limited_total", "route") == limited
            promtool = require_binary("promtool")
            check = subprocess.run([promtool, "check", "metrics"], input=rt.admin("/metrics"),
                                   capture_output=True, text=True, timeout=30)  # fmt: skip
            assert check.returncode == 0, check.stdout + check.stderr

            build_dist(dist, spec(RELOADED.format(a=a)))
            rt.proc.send_signal(signal.SIGHUP)
            want = {"plain": 0.0, "fresh": 0.0}
            eventually(lambda: _series(rt, "meshgen_circuit_open", "service") == want,
                       context=lambda: rt.admin("/metrics"))  # fmt: skip
            assert _series(rt, "meshgen_retries_total", "service") == want
            assert _series(rt, "meshgen_rate_limited_total", "route") == {"plain": 0.0}


# --- in-process client: breaker admission ----------------------------------------------------


def test_client_queues_at_the_circuit_breaker(tmp_path: Path) -> None:
    """1 connection busy, 1 request queued then served, the rest refused (503); a queued
    request whose timeout passes gets 504 - the proxy's admission (test_proxy_semantics)."""
    from meshgen.runtime import Mesh
    from meshgen.runtime.app.client import MeshError

    limits = "{max_connections: 1, max_pending_requests: 1, max_requests: 1}"
    with backend("slow") as (addr, _):
        text = spec(
            f"""
            services:
              slow: {{discovery: {{static: [{{address: "{addr}"}}]}}, circuit_breaker: {limits}}}
              tight:
                discovery: {{static: [{{address: "{addr}"}}]}}
                circuit_breaker: {limits}
                timeout: 250ms
            routes:
              - {{name: slow, match: {{host: slow}}, to: [{{service: slow}}]}}
              - {{name: tight, match: {{host: tight}}, to: [{{service: tight}}]}}
            """
        )
        mesh = Mesh(compile_tables(text, tmp_path), tmp_path)

        async def status(host: str, delay: str) -> int:
            try:
                return (await mesh.arequest("GET", f"http://{host}/", {"x-delay": delay})).status
            except MeshError as exc:
                return exc.status

        async def go() -> tuple[Counter[int], Counter[int]]:
            slow = Counter(await asyncio.gather(*(status("slow", "0.3") for _ in range(4))))
            tight = Counter(await asyncio.gather(*(status("tight", "1") for _ in range(3))))
            await mesh.aclose()
            return slow, tight

        slow, tight = asyncio.run(go())
    assert slow == Counter({200: 2, 503: 2})
    assert tight == Counter({504: 2, 503: 1})
    exposition = mesh.metrics.render()
    assert 'route="slow",service="slow",subset="",code="503",grpc_status=""} 2' in exposition
    assert 'meshgen_circuit_open{service="slow"} 0' in exposition
