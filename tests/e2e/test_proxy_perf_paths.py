"""`python DIST` on the paths the hot-path work touched: Upgrade tunnels, idle_timeout, deadlines.

The backends here are tiny raw-socket servers (a subprocess each), because the behaviour under
test is what happens on the wire after the response head: bytes after a 101, a body that stalls.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from runtime_harness import Runtime, backend, build_dist, run_dist, script_backend, spec

pytestmark = pytest.mark.e2e

# argv: MODE; it listens on a port of its own and prints it (``script_backend``).
# "upgrade": answer 101, send b"hello:", then echo every byte back.
# "stall": send a response head promising 1000 bytes, 7 of them, then hold the socket open.
RAW_BACKEND = r"""
import socket, sys, threading
mode = sys.argv[1]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = c.recv(65536)
        if not data:
            return
        buf += data
    rest = buf.split(b"\r\n\r\n", 1)[1]
    if mode == "upgrade":
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                  b"connection: Upgrade\r\n\r\nhello:")
        if rest:
            c.sendall(rest)
        while data := c.recv(65536):
            c.sendall(data)
    else:
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
        c.recv(1)  # blocks until the proxy closes
    c.close()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@pytest.fixture
def raw_backend() -> Iterator[Callable[[str], int]]:
    """``raw_backend(mode)``: start :data:`RAW_BACKEND` (listening once it printed its port);
    every one started is killed at teardown."""
    with ExitStack() as stack:
        yield lambda mode: int(
            stack.enter_context(script_backend(RAW_BACKEND, mode))[0].rsplit(":", 1)[1]
        )


def _read_until(sock: socket.socket, marker: bytes, deadline_s: float = 5.0) -> bytes:
    sock.settimeout(deadline_s)
    out = b""
    while marker not in out:
        data = sock.recv(65536)
        if not data:
            break
        out += data
    return out


@pytest.fixture
def raw_proxy(
    raw_backend: Callable[[str], int], tmp_path: Path
) -> Iterator[tuple[Runtime, int, int]]:
    ws, stall = raw_backend("upgrade"), raw_backend("stall")
    text = spec(
        f"""
        services:
          ws:
            discovery: {{static: [{{address: "127.0.0.1:{ws}"}}]}}
          stall:
            discovery: {{static: [{{address: "127.0.0.1:{stall}"}}]}}
            timeout: 30s
            idle_timeout: 600ms
        routes:
          - name: ws
            match: {{host: ws}}
            to: [{{service: ws}}]
          - name: stall
            match: {{host: stall}}
            to: [{{service: stall}}]
        """
    )
    with run_dist(build_dist(tmp_path / "dist", text)) as rt:
        yield rt, ws, stall


def test_upgrade_tunnels_bytes_both_ways(raw_proxy: tuple[Runtime, int, int]) -> None:
    """After the 101 the proxy is a byte pipe: backend-first bytes, client bytes sent with
    the request head, and later client bytes all arrive, in order, on the other side."""
    rt = raw_proxy[0]
    with socket.create_connection((rt.host, rt.port), timeout=5) as s:
        s.sendall(
            b"GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\nearly|"
        )
        got = _read_until(s, b"early|")
        head, _, after = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), got
        assert b"upgrade: websocket" in head.lower() and b"connection: upgrade" in head.lower()
        assert after == b"hello:early|", got
        for i in range(20):
            frame = b"frame-%d|" % i
            s.sendall(frame)
            assert _read_until(s, frame) == frame
        big = bytes(range(256)) * 1024  # 256 KiB through the tunnel, both ways
        s.sendall(big)
        echoed = b""
        while len(echoed) < len(big):
            data = s.recv(65536)
            assert data, "tunnel closed early"
            echoed += data
        assert echoed == big


def test_idle_timeout_closes_a_stalled_body(raw_proxy: tuple[Runtime, int, int]) -> None:
    """Headers arrived (so ``timeout`` is over); the body stalls: idle_timeout cuts it off."""
    rt = raw_proxy[0]
    with socket.create_connection((rt.host, rt.port), timeout=10) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: stall\r\n\r\n")
        got = _read_until(s, b"partial")
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"partial"), got
        start = time.monotonic()
        rest = _read_until(s, b"never", deadline_s=10)
        waited = time.monotonic() - start
    assert rest == b"", "the proxy must close the connection, not finish the body"
    assert 0.4 < waited < 5.0, waited
    assert "idle_timeout" in rt.log_text()


def test_deadline_shorter_after_longer_on_a_pooled_connection(tmp_path: Path) -> None:
    """The per-connection deadline timer is re-armed earlier for a shorter timeout, and a
    timer left from a shorter timeout does not cut a later, longer one."""
    with backend("slow") as (addr, _):
        text = spec(
            f"""
            services:
              slow:
                discovery: {{static: [{{address: "{addr}"}}]}}
            routes:
              - name: short
                match: {{host: short}}
                to: [{{service: slow}}]
                timeout: 300ms
              - name: long
                match: {{host: long}}
                to: [{{service: slow}}]
                timeout: 10s
            """
        )
        with (
            run_dist(build_dist(tmp_path / "dist", text)) as rt,
            socket.create_connection((rt.host, rt.port), timeout=15) as s,
        ):

            def get(host: str, delay: float) -> tuple[bytes, float]:
                start = time.monotonic()
                s.sendall(
                    b"GET /x HTTP/1.1\r\nHost: %s\r\nx-delay: %.2f\r\n\r\n" % (host.encode(), delay)
                )
                head = _read_until(s, b"\r\n\r\n", 15)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += s.recv(65536)
                return head.split(b"\r\n", 1)[0], time.monotonic() - start

            assert get("long", 0)[0] == b"HTTP/1.1 200 OK"  # pools a connection
            assert get("short", 0)[0] == b"HTTP/1.1 200 OK"  # its timer moves earlier
            status, took = get("long", 0.8)  # outlives the 300 ms timer of the last try
            assert status == b"HTTP/1.1 200 OK" and took >= 0.7, (status, took)
            status, took = get("short", 2.0)  # the timer moves earlier again
            assert status == b"HTTP/1.1 504 Gateway Timeout" and took < 1.5, (status, took)
