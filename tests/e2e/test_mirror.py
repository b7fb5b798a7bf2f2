"""`python DIST` mirroring: fire-and-forget copies, with bodies that fit the replay buffer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import eventually
from pytest_httpserver import HTTPServer
from runtime_harness import Runtime, build_dist, run_dist, spec
from werkzeug import Request, Response

pytestmark = pytest.mark.e2e

REPLAY_LIMIT = 64 * 1024  # http1.REPLAY_LIMIT: larger bodies are not mirrored


def _echo(request: Request) -> Response:
    return Response(b"main:" + request.get_data())


def _slow_shadow(request: Request) -> Response:
    time.sleep(float(request.headers.get("x-shadow-delay", "0")))
    return Response(b"shadow", status=500)  # the caller never sees the mirror's answer


Mirrored = tuple[Runtime, HTTPServer, HTTPServer]


@pytest.fixture
def mirrored(tmp_path: Path) -> Iterator[Mirrored]:
    main, shadow = HTTPServer(host="127.0.0.1", port=0), HTTPServer(host="127.0.0.1", port=0)
    main.expect_request("").respond_with_handler(_echo)
    shadow.expect_request("").respond_with_handler(_slow_shadow)
    for s in (main, shadow):
        s.start()
    text = spec(
        f"""
        services:
          api:
            discovery: {{static: [{{address: "127.0.0.1:{main.port}"}}]}}
          shadow:
            discovery: {{static: [{{address: "127.0.0.1:{shadow.port}"}}]}}
        routes:
          - name: api
            match: {{host: api}}
            to: [{{service: api}}]
            mirror: {{service: shadow, percent: 100}}
        """
    )
    try:
        with run_dist(build_dist(tmp_path / "dist", text)) as rt:
            yield rt, main, shadow
    finally:
        for s in (main, shadow):
            s.clear()
            s.stop()


def _shadow_requests(shadow: HTTPServer, count: int, deadline_s: float = 10.0) -> list[Request]:
    """The first ``count`` requests the mirror backend received (polled with a deadline)."""
    eventually(lambda: len(shadow.log) >= count, timeout=deadline_s,
               what=f"{count} mirrored requests (seen: {len(shadow.log)})")  # fmt: skip
    return [req for req, _ in shadow.log]


def test_mirror_copies_the_body(mirrored: Mirrored) -> None:
    rt, _, shadow = mirrored
    body = bytes(range(256)) * 200  # 51200 bytes: fits the replay buffer
    status, _, got = rt.request("POST", "/orders?x=1", "api", body=body)
    assert status == 200 and got == b"main:" + body
    (copy,) = _shadow_requests(shadow, 1)
    assert copy.method == "POST" and copy.full_path == "/orders?x=1"
    assert copy.headers["host"] == "api-shadow"
    assert copy.get_data() == body


def test_mirror_of_a_body_arriving_after_the_head(mirrored: Mirrored) -> None:
    """The head is forwarded at once; the mirror goes when the body is complete. (The proxy
    answers ``100 Continue`` when it starts forwarding, after the mirror was set up.)"""
    rt, _, shadow = mirrored
    with socket.create_connection((rt.host, rt.port), timeout=10) as s:
        s.sendall(
            b"PUT /late HTTP/1.1\r\nHost: api\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        )
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"01234")
        s.sendall(b"56789")
        out = b""
        while b"main:0123456789" not in out:
            data = s.recv(65536)
            assert data, out
            out += data
    (copy,) = _shadow_requests(shadow, 1)
    assert copy.method == "PUT" and copy.get_data() == b"0123456789"


def test_large_body_not_mirrored_and_slow_mirror_never_delays(mirrored: Mirrored) -> None:
    """A body past the replay buffer is not mirrored; a mirror that takes 2 s to answer never
    delays the caller. (The marker's copy is logged once answered, 2 s after it arrived: had
    the big body been mirrored, its copy would be first in the log.)"""
    rt, _, shadow = mirrored
    big = b"x" * (REPLAY_LIMIT + 1)
    status, _, got = rt.request("POST", "/big", "api", body=big)
    assert status == 200 and got == b"main:" + big
    start = time.monotonic()
    status, _, got = rt.request(
        "POST", "/marker", "api", body=b"m", headers={"x-shadow-delay": "2"}
    )
    assert status == 200 and got == b"main:m" and time.monotonic() - start < 1.5
    (copy,) = _shadow_requests(shadow, 1)  # only the marker: the big body was skipped
    assert copy.full_path.rstrip("?") == "/marker" and copy.get_data() == b"m"
    assert len(shadow.log) == 1
