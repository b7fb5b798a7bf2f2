"""Hostile clients of the admin server of a real `python DIST`: each is cut off by a limit or a
timeout, none grows the runtime's memory without bound or holds up other admin clients.

(The limits themselves, on an in-process server: tests/unit/test_admin.py.)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import eventually
from runtime_harness import Runtime, backend, build_dist, get_text, memory, run_dist, spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SERVICES = """
services:
  web: {discovery: {static: [{address: "127.0.0.1:9"}]}}
routes:
  - {name: web, match: {host: web}, to: [{service: web}]}
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with run_dist(build_dist(tmp_path_factory.mktemp("admin") / "dist", spec(SERVICES))) as rt:
        yield rt


def admin_socket(rt: Runtime) -> socket.socket:
    """A connection to the admin server with a small receive window (an attacker's)."""
    host, port = str(rt.ready["admin"]).rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    return s


def test_pipelined_requests_of_a_client_that_does_not_read_are_bounded(runtime: Runtime) -> None:
    """A client pipelines 40,000 ``/config`` requests (1 MiB) and reads nothing: the admin
    server answers while the client's socket takes the answers, then stops reading and answers
    no further (at most 32 requests wait; beyond them the connection is closed): the runtime's
    memory grows by less than 8 MiB and ``/healthz`` answers another client within 2 s.
    (Answering every request as it came, measured with the pure runtime on a busy machine:
    29 MiB more, and ``/healthz`` took 3.1 s; compiled, it took over 5 s.)"""
    one = len(get_text(str(runtime.ready["admin"]), "/config"))
    before = memory(runtime.proc.pid) // 1024
    flood = b"GET /config HTTP/1.1\r\nHost: a\r\n\r\n" * 40000
    with admin_socket(runtime) as s:
        s.setblocking(False)
        sent, deadline = 0, time.monotonic() + 3
        while sent < len(flood) and time.monotonic() < deadline:
            try:
                sent += s.send(flood[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        started = time.monotonic()
        assert get_text(str(runtime.ready["admin"]), "/healthz", timeout=10) == "ok\n"
        assert time.monotonic() - started < 2
        grown = memory(runtime.proc.pid) // 1024 - before
    assert grown < 8 * 1024, (grown, one)


ADMIN_CAP = 256  # ADMIN_LIMITS.max_connections; request_head_timeout is the default 10 s


def test_a_slow_loris_on_the_admin_server_is_capped_and_timed_out(tmp_path: Path) -> None:
    """As many clients as the admin server takes (256) each trickle a request head one byte a
    second and never finish it. The next admin client is closed at once; the proxy's listener
    goes on serving; at ``request_head_timeout`` (10 s) every slow client gets 408 and is
    closed, each counted, and ``/healthz`` answers again."""
    with backend("a") as (address, _):
        text = spec(
            f"""
            services:
              a: {{discovery: {{static: [{{address: "{address}"}}]}}}}
            routes:
              - {{name: a, match: {{host: a}}, to: [{{service: a}}]}}
            """
        )
        with run_dist(build_dist(tmp_path / "dist", text)) as rt:
            admin = str(rt.ready["admin"])
            opened = time.monotonic()
            slow = [admin_socket(rt) for _ in range(ADMIN_CAP)]
            try:
                for s in slow:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                eventually(lambda: refused_at_once(rt), timeout=5, what="the cap refusing")
                answers = trickle(slow, until=opened + 20)
                waited = time.monotonic() - opened
                assert rt.request("GET", "/", "a")[0] == 200
            finally:
                for s in slow:
                    s.close()
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), set(answers)
            assert 9 < waited < 15, waited
            assert get_text(admin, "/healthz") == "ok\n"
            metrics = get_text(admin, "/metrics")
    timed_out = (
        'meshgen_connections_rejected_total{listener="_admin",reason="request_head_timeout"} '
        f"{ADMIN_CAP}"
    )
    assert timed_out in metrics
    assert 'listener="_admin",reason="max_connections"}' in metrics


def refused_at_once(rt: Runtime) -> bool:
    """A new admin client is closed without an answer (the cap is full)."""
    with admin_socket(rt) as s:
        s.settimeout(2)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            return s.recv(4096) == b""
        except ConnectionResetError:
            return True


def trickle(slow: list[socket.socket], until: float) -> list[bytes]:
    """Send each of ``slow`` one more header byte a second until every one has been answered
    and closed (or ``until``); what each got back."""
    answers = [b""] * len(slow)
    open_ = set(range(len(slow)))
    for s in slow:
        s.setblocking(False)
    while open_ and time.monotonic() < until:
        for i in list(open_):
            try:
                chunk = slow[i].recv(4096)
            except BlockingIOError:
                chunk = None
            except ConnectionResetError:
                chunk = b""
            if chunk == b"":
                open_.discard(i)
            elif chunk is not None:
                answers[i] += chunk
            else:
                try:
                    slow[i].send(b"x")
                except OSError:
                    open_.discard(i)
        time.sleep(1)
    return answers
