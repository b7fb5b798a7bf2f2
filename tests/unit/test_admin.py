"""Admin server over real HTTP on 127.0.0.1:0: every endpoint, methods, parsing, keep-alive."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import require_binary
from polling import eventually_async
from tables_factory import HOSTILE, make_tables

from meshgen.runtime.observe import admin
from meshgen.runtime.observe.admin import AdminServer, start_admin
from meshgen.runtime.observe.alerts import AlertEvaluator
from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.tables import Alert, Limits, Tables


class FakeUpstreams:
    """Stands in for Upstreams: only ``snapshot()`` is used by the admin server."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> dict[str, Any]:
        return self._snapshot


SNAPSHOT = {
    "reviews": {
        "discovery": {"kind": "static", "query": None, "ok": True, "failures": 0,
                      "last_error": None},
        "backup": None,
        "healthy": 1,
        "total": 2,
        "endpoints": [
            {"address": "127.0.0.1:9081", "weight": 1, "zone": "a", "labels": {"version": "v1"},
             "healthy": True, "ejected": False, "in_flight": 3},
            {"address": "127.0.0.1:9082", "weight": 2, "zone": "b", "labels": {"version": HOSTILE},
             "healthy": False, "ejected": True, "in_flight": 0},
        ],
    }
}  # fmt: skip


def _with_admin(
    body: Callable[[AdminServer, Metrics, AlertEvaluator], Awaitable[None]],
    tables: Tables | None = None,
    snapshot: dict[str, Any] | None = None,
) -> None:
    tables = tables or make_tables()
    metrics = Metrics()
    evaluator = AlertEvaluator(tables.alerts, tables.slos)

    async def main() -> None:
        server = await start_admin(
            "127.0.0.1", 0, tables_provider=lambda: tables,
            upstreams_provider=lambda: FakeUpstreams(snapshot or SNAPSHOT),
            metrics=metrics, alerts=evaluator, runtime=RUNTIME,
        )  # fmt: skip
        try:
            await body(server, metrics, evaluator)
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


async def _get(server: AdminServer, path: str, method: str = "GET") -> tuple[int, Any, bytes]:
    def fetch() -> tuple[int, Any, bytes]:
        request = urllib.request.Request(f"http://{server.bound_address}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    return await asyncio.to_thread(fetch)


async def _raw(server: AdminServer, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    writer.close()
    return out


RUNTIME = "compiled (mypyc, 0123456789abcdef)"


def test_bound_address_and_endpoints() -> None:
    """Port 0 binds a real port; /healthz /metrics /config /alerts answer with their types."""

    async def body(server: AdminServer, metrics: Metrics, _: AlertEvaluator) -> None:
        assert server.bound_address == f"127.0.0.1:{server.port}" == server.address
        assert server.port > 0
        metrics.observe_request("edge", "r", "reviews", "v1", 200, 0.01)
        status, headers, data = await _get(server, "/healthz")
        assert (status, data) == (200, b"ok\n")
        status, headers, data = await _get(server, "/metrics?x=1")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b'meshgen_requests_total{listener="edge",route="r",service="reviews"' in data
        status, headers, data = await _get(server, "/config")
        assert headers["Content-Type"] == "application/json"
        config = json.loads(data)
        tables = json.loads(json.dumps(dataclasses.asdict(make_tables())))
        assert config == {**tables, "runtime": RUNTIME}  # the tables, and which runtime runs
        status, _, data = await _get(server, "/alerts")
        assert json.loads(data) == {"alerts": []}

    _with_admin(body)


def test_alerts_endpoint_lists_firing_alerts() -> None:
    alert = Alert("reviews-down", "reviews", "healthy_endpoints", "<", 1.0, 0.0, "page", "down")
    tables = dataclasses.replace(make_tables(), alerts=(alert,), slos=())

    async def body(server: AdminServer, metrics: Metrics, evaluator: AlertEvaluator) -> None:
        metrics.set_endpoint_healthy("reviews", "127.0.0.1:9081", False)
        evaluator.step(1_700_000_000.0, metrics.collect())
        _, _, data = await _get(server, "/alerts")
        (only,) = json.loads(data)["alerts"]
        assert only["labels"] == {"alertname": "reviews-down", "service": "reviews",
                                  "severity": "page"}  # fmt: skip
        assert only["state"] == "firing" and only["annotations"]["summary"] == "down"
        _, _, page = await _get(server, "/status")
        assert b'data-alert="reviews-down" data-state="firing"' in page

    _with_admin(body, tables)


def test_status_page_shows_live_state_escaped() -> None:
    """Every service, route and endpoint, endpoint verdict/ejection/circuit, no raw markup."""

    async def body(server: AdminServer, metrics: Metrics, _: AlertEvaluator) -> None:
        metrics.set_circuit_open("reviews", True)
        metrics.inc_ejection("reviews", "127.0.0.1:9082")
        status, headers, page = await _get(server, "/status")
        text = page.decode()
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert '<meta http-equiv="refresh"' in text
        for cluster in make_tables().clusters:
            assert f'data-service="{cluster.name}"' in text
        assert re.search(r'data-endpoint="127.0.0.1:9082" data-verdict="failing"[^>]*'
                         r'data-ejected="true"', text)  # fmt: skip
        for route in make_tables().routes:
            assert f'data-route="{html.escape(route.name, quote=True)}"' in text
        assert 'data-circuit="open"' in text
        assert "{{ x }}" in text and "<script" not in text.lower()
        assert HOSTILE not in text  # quotes and angle brackets arrive escaped

    _with_admin(body)


def test_methods_unknown_paths_and_redirect() -> None:
    async def body(server: AdminServer, *_: Any) -> None:
        status, headers, _ = await _get(server, "/metrics", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        status, _, _ = await _get(server, "/nope")
        assert status == 404
        raw = await _raw(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 302 Found\r\n") and b"\r\nLocation: /status\r\n" in raw
        raw = await _raw(server, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 3" in raw
        assert raw.endswith(b"\r\n\r\n")  # HEAD: no body

    _with_admin(body)


def test_keep_alive_and_pipelining_keep_order() -> None:
    async def body(server: AdminServer, *_: Any) -> None:
        two = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
        raw = await _raw(server, two)
        first, second = raw.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200 OK") and b"Connection: keep-alive" in first
        assert second.startswith(b"404 Not Found") and b"Connection: close" in second

    _with_admin(body)


def test_malformed_or_oversized_requests_are_refused_and_closed() -> None:
    """400 for bad syntax, 414 for a URL over 16 KiB, 431 for a head over 64 KiB; then close."""

    async def body(server: AdminServer, *_: Any) -> None:
        for junk, status in (
            (b"GARBAGE\r\n\r\n", b"400 Bad Request"),
            (
                b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"400 Bad Request",
            ),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"414 URI Too Long"),
            (b"GET / HTTP/1.1\r\n" + b"x-h: v\r\n" * 10_000, b"431 Request Header Fields"),
        ):
            raw = await _raw(server, junk)
            assert raw.startswith(b"HTTP/1.1 " + status), raw[:80]
            assert b"Connection: close" in raw

    _with_admin(body)


def test_admin_clients_get_the_listeners_timeouts_and_cap() -> None:
    """The admin server holds its clients to limits like a listener's: a slow head gets 408,
    an idle keep-alive connection closes, connections beyond the cap are closed at once; each
    refusal counted under listener="_admin"."""
    limits = Limits(request_head_timeout_s=0.3, client_idle_timeout_s=0.3, max_connections=3)
    metrics = Metrics()

    async def main() -> None:
        server = await start_admin(
            "127.0.0.1", 0, tables_provider=make_tables, upstreams_provider=lambda: None,
            metrics=metrics, limits=limits,
        )  # fmt: skip
        host, port = server.host, server.port
        try:
            slow_r, slow_w = await asyncio.open_connection(host, port)
            slow_w.write(b"GET /healthz HTTP/1.1\r\n")
            idle_r, idle_w = await asyncio.open_connection(host, port)
            idle_w.write(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert (await idle_r.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200 ")
            third = await asyncio.open_connection(host, port)
            fourth_r, _ = await asyncio.open_connection(host, port)
            assert await asyncio.wait_for(fourth_r.read(), 2) == b""  # over the cap
            assert (await asyncio.wait_for(slow_r.read(), 2)).startswith(b"HTTP/1.1 408 ")
            assert await asyncio.wait_for(idle_r.read(), 2) == b""  # idle: closed, no answer
            for writer in (slow_w, idle_w, third[1]):
                writer.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    rejected = metrics.collect()["meshgen_connections_rejected_total"]
    assert rejected[(("listener", "_admin"), ("reason", "max_connections"))] == 1
    assert rejected[(("listener", "_admin"), ("reason", "request_head_timeout"))] >= 1


def test_close_drops_idle_keep_alive_connections() -> None:
    async def main() -> None:
        tables = make_tables()
        server = await start_admin("127.0.0.1", 0, tables_provider=lambda: tables,
                                   upstreams_provider=lambda: None, metrics=Metrics())  # fmt: skip
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"ok\n")
        await asyncio.wait_for(server.close(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        with socket.socket() as s:
            assert s.connect_ex((server.host, server.port)) != 0

    asyncio.run(main())


def test_status_without_upstreams_and_metrics_lint() -> None:
    """Before Upstreams exist the page lists table endpoints; /metrics passes promtool."""
    promtool = require_binary("promtool")

    async def main() -> None:
        tables = make_tables()
        metrics = Metrics()
        metrics.observe_request("edge", "r", "reviews", "v1", 503, 0.2)
        server = await start_admin("127.0.0.1", 0, tables_provider=lambda: tables,
                                   upstreams_provider=lambda: None, metrics=metrics)  # fmt: skip
        try:
            _, _, page = await _get(server, "/status")
            assert b'data-endpoint="127.0.0.1:9081"' in page
            _, _, exposition = await _get(server, "/metrics")
        finally:
            await server.close()
        result = subprocess.run([promtool, "check", "metrics"], input=exposition,
                                capture_output=True, timeout=30)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    asyncio.run(main())


def test_serves_under_uvloop() -> None:
    """The runtime uses uvloop when installed; its transports are not asyncio subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        tables = make_tables()
        server = await start_admin("127.0.0.1", 0, tables_provider=lambda: tables,
                                   upstreams_provider=lambda: None, metrics=Metrics())  # fmt: skip
        try:
            raw = await _raw(
                server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"ok\n")
        finally:
            await server.close()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()


async def _pipelined_unread(server: AdminServer, n: int) -> socket.socket:
    """A connection with small socket buffers on both sides that sends ``n`` pipelined
    ``/config`` requests and reads nothing (yet); the caller closes it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    known = set(server._connections)
    await loop.sock_connect(s, (server.host, server.port))
    (transport,) = await eventually_async(lambda: set(server._connections) - known)
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport.set_write_buffer_limits(high=4096)
    await loop.sock_sendall(s, b"".join(b"GET /config?%d HTTP/1.1\r\n\r\n" % i for i in range(n)))
    return s


def test_a_client_that_does_not_read_gets_its_answers_in_order_or_is_closed() -> None:
    """Small socket buffers on both sides: 30 pipelined ``/config`` requests sent before the
    client reads a byte are all answered, in order, once it reads (the later ones waited while
    the server stopped reading); 100 are more than may wait, and the connection closes with
    fewer answers."""

    async def answers(server: AdminServer, n: int) -> tuple[list[bytes], bool]:
        loop = asyncio.get_running_loop()
        with await _pipelined_unread(server, n) as s:
            await asyncio.sleep(0.3)
            out, closed = b"", False
            try:
                while chunk := await asyncio.wait_for(loop.sock_recv(s, 65536), 1):
                    out += chunk
                closed = True
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                pass
            return out.split(b"HTTP/1.1 ")[1:], closed

    async def body(server: AdminServer, *_: Any) -> None:
        got, closed = await answers(server, 30)
        assert len(got) == 30 and not closed and all(a.startswith(b"200 OK") for a in got)
        assert all(a.endswith(b"}\n") for a in got)  # each answer whole
        got, closed = await answers(server, 100)
        assert closed and len(got) < 100, len(got)

    _with_admin(body)


def test_an_idle_client_with_answers_it_never_takes_is_dropped() -> None:
    """A client that leaves its answers unread past the idle timeout is dropped, its slot
    given back: a close that waits for the answers to be sent would wait for ever, and 256
    such clients would lock everyone out of ``/healthz``."""
    limits = Limits(request_head_timeout_s=0.3, client_idle_timeout_s=0.3, max_connections=2)

    async def main() -> None:
        server = await start_admin(
            "127.0.0.1", 0, tables_provider=make_tables, upstreams_provider=lambda: None,
            metrics=Metrics(), limits=limits,
        )  # fmt: skip
        try:
            with await _pipelined_unread(server, 30), await _pipelined_unread(server, 30):
                await eventually_async(lambda: not server._connections, timeout=3)
                status, _, data = await _get(server, "/healthz")
                assert (status, data) == (200, b"ok\n")
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_config_is_rendered_once_per_tables() -> None:
    """The same tables give the same rendering (the very bytes: not made again per request); a
    reload's new tables are rendered afresh."""
    current = [make_tables()]
    ctx = admin._Context(lambda: current[0], lambda: None, Metrics(), None, RUNTIME)
    first = admin.handle(ctx, "GET", "/config")[2]
    assert admin.handle(ctx, "GET", "/config")[2] is first
    current[0] = dataclasses.replace(current[0], routes=())
    reloaded = admin.handle(ctx, "GET", "/config")[2]
    assert reloaded is not first and json.loads(reloaded)["routes"] == []
    assert json.loads(first)["routes"] != []
