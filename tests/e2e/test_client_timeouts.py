"""Client timeouts and connection caps of `python DIST` and its admin server.

The listener runs with `request_head_timeout: 500ms`, `client_idle_timeout: 800ms` and
`max_connections: 20` in front of an echo backend. Slow heads get 408, idle keep-alive
connections are closed, connections beyond the cap are accepted and closed at once (counted),
and the admin server keeps answering while the listener is full or the process is near its
open-files limit, which the runtime raises to the hard limit at start.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import eventually
from runtime_harness import (
    Runtime,
    backend,
    build_dist,
    open_fds,
    read_response,
    run_dist,
    spec,
)
from test_proxy_semantics import count

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

LIMITS = "{request_head_timeout: 500ms, client_idle_timeout: 800ms, max_connections: 20}"


def limited_spec(web: str, limits: str = LIMITS) -> str:
    text = spec(
        f"""
        services:
          web: {{discovery: {{static: [{{address: "{web}"}}]}}}}
        routes:
          - {{name: web, match: {{host: web}}, to: [{{service: web}}]}}
        """
    )
    return text.replace('address: "127.0.0.1:0"}', f'address: "127.0.0.1:0", limits: {limits}}}')


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with backend("web") as (web, _):
        yield build_dist(tmp_path_factory.mktemp("timeouts") / "dist", limited_spec(web))


@pytest.fixture
def proxy(dist: Path) -> Iterator[Runtime]:
    with run_dist(dist) as rt:
        yield rt


def rejected(rt: Runtime, reason: str) -> float:
    return count(rt, "meshgen_connections_rejected_total", listener="edge", reason=reason)


def connect(rt: Runtime) -> socket.socket:
    return socket.create_connection((rt.host, rt.port), timeout=5)


def read_all(s: socket.socket) -> tuple[bytes, float]:
    """Everything until the proxy closes, and when (monotonic) it did."""
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            out += chunk
    return out, time.monotonic()


def healthz(rt: Runtime) -> bool:
    return rt.admin("/healthz") == "ok\n"


def test_slowloris_gets_408(proxy: Runtime) -> None:
    """A head trickling in one byte per 100 ms: 408 about 500 ms after its first byte."""
    before = rejected(proxy, "request_head_timeout")
    with connect(proxy) as s:
        start = time.monotonic()
        with contextlib.suppress(OSError):
            for byte in b"GET / HTTP/1.1\r\nHost: web\r\nx-slow: " + b"s" * 40:
                s.sendall(bytes([byte]))
                time.sleep(0.1)
        out, ended = read_all(s)
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert 0.4 <= ended - start < 3, ended - start
    assert rejected(proxy, "request_head_timeout") == before + 1


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(proxy: Runtime) -> None:
    """As HAProxy with http-ignore-probes: closed at the head timeout, nothing written."""
    with connect(proxy) as s:
        start = time.monotonic()
        out, ended = read_all(s)
    assert out == b"" and 0.4 <= ended - start < 3


def test_keep_alive_connections_close_when_idle(proxy: Runtime) -> None:
    """After its answer, a keep-alive connection with no new request closes after the idle
    timeout (800 ms); one that sends its next request in time is served."""
    with connect(proxy) as s:
        for path in (b"/a", b"/b"):
            s.sendall(b"GET %s HTTP/1.1\r\nHost: web\r\n\r\n" % path)
            assert read_response(s).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.6)  # longer than the head timeout, shorter than the idle one
        start = time.monotonic()
        out, ended = read_all(s)
    assert out == b"" and 0.05 <= ended - start < 3


def test_connections_beyond_the_cap_are_closed_and_counted(proxy: Runtime) -> None:
    """With 20 open, the next connections are accepted and closed at once (counted); once
    the idle ones are gone, new connections are served again; the admin server answers."""
    before = rejected(proxy, "max_connections")
    held = [connect(proxy) for _ in range(20)]
    try:
        time.sleep(0.1)
        for _ in range(5):
            with connect(proxy) as extra:
                extra.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
                assert read_all(extra)[0] == b""
        assert rejected(proxy, "max_connections") == before + 5
        assert healthz(proxy)
    finally:
        for s in held:
            s.close()
    assert proxy.request("GET", "/again", "web")[0] == 200


def test_idle_flood_near_the_open_files_limit(tmp_path: Path) -> None:
    """With only 256 descriptors (soft = hard), 300 idle clients: the listener stops at its
    descriptor reserve (the rest closed, reason fd_limit), `/healthz` still answers, and once
    the flood is over the runtime's descriptors are back to their baseline."""
    with backend("web") as (web, _):
        limits = "{request_head_timeout: 1s, max_connections: 10000}"
        dist = build_dist(tmp_path / "dist", limited_spec(web, limits))
        with run_dist(dist, nofile=(256, 256)) as rt:
            baseline = open_fds(rt.proc.pid)
            flood = []
            for _ in range(300):
                with contextlib.suppress(OSError):
                    flood.append(connect(rt))
            time.sleep(0.2)
            assert healthz(rt)
            assert rejected(rt, "fd_limit") > 0
            assert open_fds(rt.proc.pid) <= 256 - 16
            for s in flood:
                s.close()
            eventually(lambda: open_fds(rt.proc.pid) == baseline, timeout=5, what="fds back")
            assert rt.request("GET", "/after", "web")[0] == 200


def test_the_runtime_raises_its_open_files_limit(dist: Path) -> None:
    """Started with a soft limit of 256 under a hard one of 4096, it runs with 4096."""
    with run_dist(dist, nofile=(256, 4096)) as rt:
        soft, hard = resource.prlimit(rt.proc.pid, resource.RLIMIT_NOFILE)
    assert (soft, hard) == (4096, 4096)
