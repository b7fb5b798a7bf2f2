"""Whole-message calls against an endpoint whose answer never ends: a mirror's copy (its answer is
read and dropped) and the in-process client (its answer is returned as bytes). Neither may
hold more than a bounded part of such an answer.

``hostile_backend.py``'s ``/endless-body`` answers 200 with chunks for ever, as fast as they
are read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from runtime_harness import (
    HOSTILE,
    build_dist,
    compile_tables,
    memory,
    run_dist,
    script_backend,
    spec,
)
from test_h2_upstream import web_spec

from meshgen.runtime import Mesh, MeshError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]
MIB = 1 << 20


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    with script_backend(HOSTILE) as (address, _):
        yield address


def test_a_mirror_whose_answer_never_ends_is_not_buffered(
    hostile: str, httpserver: HTTPServer, tmp_path: Path
) -> None:
    """Four mirrored requests to an endless answer: the sidecar's memory stays flat (it read
    ~30 MB a second of them into memory before) and it answers on."""
    httpserver.expect_request("/endless-body").respond_with_data("main")
    text = spec(
        f"""
        services:
          api: {{discovery: {{static: [{{address: "127.0.0.1:{httpserver.port}"}}]}}}}
          hostile: {{discovery: {{static: [{{address: "{hostile}"}}]}}}}
        routes:
          - name: api
            match: {{host: api}}
            to: [{{service: api}}]
            mirror: {{service: hostile, percent: 100}}
        """
    )
    with run_dist(build_dist(tmp_path / "dist", text)) as rt:
        assert rt.request("GET", "/endless-body", "api")[0] == 200  # warm up, then measure
        time.sleep(0.5)
        before = memory(rt.proc.pid, "VmRSS")
        for _ in range(4):
            status, _, body = rt.request("GET", "/endless-body", "api")
            assert (status, body) == (200, b"main")
        time.sleep(3)
        grown = memory(rt.proc.pid, "VmHWM") - before
        assert grown < 16 * MIB, f"mirrors' answers were buffered: +{grown / MIB:.0f} MiB"
        assert rt.request("GET", "/endless-body", "api")[:3:2] == (200, b"main")


def test_the_client_refuses_an_answer_over_its_limit(hostile: str, tmp_path: Path) -> None:
    """An answer over ``max_response_bytes`` is a 502 naming the limit, once the limit is
    passed (not when the endpoint stops); answers within it come whole."""
    text = spec(
        f"""
        services:
          hostile: {{discovery: {{static: [{{address: "{hostile}"}}]}}, timeout: 2s}}
        routes:
          - {{name: hostile, match: {{host: hostile}}, to: [{{service: hostile}}]}}
        """
    )
    mesh = Mesh(compile_tables(text, tmp_path), tmp_path, max_response_bytes=MIB)
    try:
        started = time.monotonic()
        with pytest.raises(MeshError) as refused:
            mesh.request("GET", "http://hostile/endless-body")
        assert refused.value.status == 502
        assert "1048576 bytes" in str(refused.value)
        assert time.monotonic() - started < 20
        assert mesh.request("GET", "http://hostile/ok/whole").body == b"whole"
    finally:
        mesh.close()


def test_the_limit_holds_on_an_http2_endpoint(tmp_path: Path) -> None:
    """Over HTTP/2 the stream is cancelled past the limit (the connection serves on)."""
    source = Path(__file__).with_name("h2_backend.py").read_text()
    with script_backend(source, "ok") as (address, _):
        mesh = Mesh(compile_tables(web_spec(address), tmp_path), tmp_path, max_response_bytes=MIB)
        try:
            with pytest.raises(MeshError, match="1048576 bytes") as refused:
                mesh.request("GET", "http://web/big/4")
            assert refused.value.status == 502
            assert mesh.request("GET", "http://web/big/1").body == b"x" * MIB  # at the limit
        finally:
            mesh.close()
