"""Hostile clients of the admin server of a real `python DIST`: each is cut off by a limit or a
timeout, none grows the runtime's memory without bound or holds up other admin clients.

(The limits themselves, on an in-process server: tests/unit/test_admin.py.)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from runtime_harness import Runtime, build_dist, get_text, memory, run_dist, spec

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
