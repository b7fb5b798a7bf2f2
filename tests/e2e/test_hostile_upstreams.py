"""Hostile upstreams: whatever an endpoint sends, each client gets its own answer or an error.

`python DIST` runs in front of ``hostile_backend.py``, which misbehaves by path (see its
docstring). Every case checks the status the client gets and then that a following request,
on a fresh client connection, gets its own answer (``/ok/NAME`` answers ``NAME``): no byte of a
misbehaving exchange may reach another client, and no broken connection may be reused.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_harness import Runtime, build_dist, run_dist, script_backend, spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

HOSTILE = Path(__file__).with_name("hostile_backend.py").read_text()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with script_backend(HOSTILE) as (address, _):
        text = spec(
            f"""
            services:
              hostile:
                discovery: {{static: [{{address: "{address}"}}]}}
                timeout: 2s
                idle_timeout: 1s
            routes:
              - {{name: hostile, match: {{host: hostile}}, to: [{{service: hostile}}]}}
            """
        )
        dist = build_dist(tmp_path_factory.mktemp("hostile") / "dist", text)
        with run_dist(dist) as rt:
            yield rt


def own_answer(rt: Runtime, name: str) -> None:
    """A fresh client gets exactly its own answer (nothing injected, nothing appended)."""
    status, headers, body = rt.request("GET", f"/ok/{name}", "hostile")
    assert (status, body) == (200, name.encode()), (status, headers, body)
    assert "x-injected" not in headers


def answer_and_silence(rt: Runtime, path: str, wait: float = 0.4) -> bytes:
    """One request on a kept-open connection: everything the proxy sends within ``wait``
    seconds after the request (its answer, and anything appended to it)."""
    with socket.create_connection((rt.host, rt.port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: hostile\r\n\r\n" % path.encode())
        out = b""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


@pytest.mark.parametrize("path", ["/unsolicited", "/unsolicited-head"])
def test_unsolicited_response_on_an_idle_pooled_connection(proxy: Runtime, path: str) -> None:
    """The endpoint answers, then writes (the head of) a second response on the idle
    keep-alive connection: nothing is appended to the first client's answer, the pool drops
    that connection, and the next clients get their own answers, not the injected one."""
    out = answer_and_silence(proxy, path)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\nfirst"), out
    for i in range(3):
        own_answer(proxy, f"after-{path[1:]}-{i}")


def test_two_responses_in_one_packet(proxy: Runtime) -> None:
    """Two responses to one request in one packet: the first is the answer (framed once, by
    its own content-length), the second reaches nobody."""
    status, headers, body = proxy.request("GET", "/two", "hostile")
    assert (status, body) == (200, b"one"), (status, headers, body)
    assert "x-injected" not in headers
    for i in range(3):
        own_answer(proxy, f"after-two-{i}")
