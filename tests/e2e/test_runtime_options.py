"""`python DIST` command-line options end to end: --listener, --access-log, --log-level, --root.

Each test builds a DIST with the real compiler, runs it as a subprocess on port-0 listeners
(the ready file says where) against real backends on 127.0.0.1, and stops what it started.
A port that must *not* be listening is reserved by binding a socket without ``listen()``:
connecting to it is refused, and a runtime that tried to bind it would fail to start.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from runtime_harness import backend, build_dist, run_dist, spec

pytestmark = pytest.mark.e2e

ACCESS_LOG_KEYS = {
    "time", "listener", "client", "method", "target", "host",
    "route", "service", "status", "duration_s", "request_id",
}  # fmt: skip


@contextmanager
def reserved_port() -> Iterator[int]:
    """A 127.0.0.1 port that is bound (so nobody else gets it) but refuses connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def three_listeners(addr: str, c_port: int) -> str:
    return (
        "version: 1\n"
        "mesh: {name: shop, domain: mesh.test}\n"
        "listeners:\n"
        '  - {name: edge, address: "127.0.0.1:0"}\n'
        '  - {name: b, address: "127.0.0.1:0"}\n'
        f'  - {{name: c, address: "127.0.0.1:{c_port}"}}\n'
        'admin: "127.0.0.1:0"\n'
        f'services: {{web: {{discovery: {{static: [{{address: "{addr}"}}]}}}}}}\n'
        "routes: [{name: r, match: {host: shop}, to: [{service: web}]}]\n"
    )


def get(address: str, host: str = "shop", path: str = "/") -> tuple[int, bytes]:
    h, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def run_to_exit(dist: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python DIST ARGS`` that is expected to exit on its own (a refused start)."""
    return subprocess.run(
        [sys.executable, str(dist), "--ready-file", str(dist.parent / "never.json"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_listener_option_serves_only_the_named_listeners(tmp_path: Path) -> None:
    """``--listener edge --listener b`` binds edge and b (both route), never c."""
    with backend("web") as (addr, _), reserved_port() as c_port:
        dist = build_dist(tmp_path / "dist", three_listeners(addr, c_port))
        with run_dist(dist, "--listener", "edge", "--listener", "b") as rt:
            listeners = rt.ready["listeners"]
            assert isinstance(listeners, dict)
            assert set(listeners) == {"edge", "b"}
            for name in ("edge", "b"):
                status, body = get(str(listeners[name]))
                assert status == 200 and body.startswith(b"web GET /"), (name, status, body)
            assert refused(c_port)
        # Control: without --listener the runtime tries c too, and c's port is taken.
        result = run_to_exit(dist)
        assert result.returncode != 0
        assert not (dist.parent / "never.json").exists()


def test_unknown_listener_is_a_usage_error(tmp_path: Path) -> None:
    """An unknown name exits 2 (a usage error) naming it and the known listeners."""
    with reserved_port() as c_port:
        dist = build_dist(tmp_path / "dist", three_listeners("127.0.0.1:9", c_port))
        result = run_to_exit(dist, "--listener", "edge", "--listener", "nope")
    assert result.returncode == 2, result
    assert "unknown listener" in result.stderr and "'nope'" in result.stderr, result.stderr
    assert "b, c, edge" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never.json").exists()


def one_service(addr: str) -> str:
    return spec(f"""
        services: {{web: {{discovery: {{static: [{{address: "{addr}"}}]}}}}}}
        routes: [{{name: r, match: {{host: shop}}, to: [{{service: web}}]}}]
        """)


def json_lines(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_access_log_is_off_by_default(tmp_path: Path) -> None:
    """Without --access-log, requests leave no trace in the runtime's stdout/stderr."""
    with backend("web") as (addr, _):
        dist = build_dist(tmp_path / "dist", one_service(addr))
        with run_dist(dist) as rt:
            for i in range(3):
                status, _, _ = rt.request("GET", f"/quiet/{i}", "shop", {"x-request-id": f"q{i}"})
                assert status == 200
            assert rt.request("GET", "/", "nowhere")[0] == 404
    text = rt.log_text()
    assert "serving" in text  # the log is there, it just has no request lines
    assert json_lines(text) == []
    assert "/quiet/" not in text and "q1" not in text


@pytest.mark.parametrize("where", ["file", "stderr"])
def test_access_log_one_json_line_per_request(tmp_path: Path, where: str) -> None:
    """One JSON object per request (proxied or answered locally), with the request id the
    backend saw: kept when the caller sent one, the generated one otherwise."""
    log_file = tmp_path / "access.jsonl"
    arg = str(log_file) if where == "file" else "-"
    with backend("web") as (addr, _):
        dist = build_dist(tmp_path / "dist", one_service(addr))
        with run_dist(dist, "--access-log", arg) as rt:
            s1, h1, _ = rt.request("GET", "/a?x=1", "shop", {"x-request-id": "caller-id-1"})
            s2, h2, _ = rt.request("POST", "/b", "shop", body=b"hello")
            s3, _, _ = rt.request("GET", "/c", "nowhere")
            seen = [h1["echo-x-request-id"], h2["echo-x-request-id"]]
    assert (s1, s2, s3) == (200, 200, 404)
    text = log_file.read_text() if where == "file" else rt.log_text()
    lines = json_lines(text)
    assert len(lines) == 3, text
    for line in lines:
        assert set(line) == ACCESS_LOG_KEYS, line
        assert isinstance(line["duration_s"], float) and 0 <= line["duration_s"] < 10
        assert line["listener"] == "edge" and line["client"] == "127.0.0.1"
    a, b, c = lines
    assert (a["method"], a["target"], a["host"], a["status"]) == ("GET", "/a?x=1", "shop", 200)
    assert (a["route"], a["service"], a["request_id"]) == ("r", "web", "caller-id-1")
    assert (b["method"], b["target"], b["status"], b["route"]) == ("POST", "/b", 200, "r")
    assert b["request_id"] == seen[1] and seen[1] and seen[1] != "caller-id-1"
    assert (c["target"], c["host"], c["status"], c["route"], c["service"]) == (
        "/c", "nowhere", 404, "", ""
    )  # fmt: skip
    assert c["request_id"] and c["request_id"] not in seen


def test_log_level_debug_shows_more_than_warning(tmp_path: Path) -> None:
    """A refused upstream connection is logged at debug ("connect ADDR: ..."): present with
    --log-level debug, absent with warning (which also hides the info-level "serving")."""
    with reserved_port() as dead:
        dist = build_dist(tmp_path / "dist", one_service(f"127.0.0.1:{dead}"))
        texts = {}
        for level in ("debug", "warning"):
            with run_dist(dist, "--log-level", level) as rt:
                status, _, _ = rt.request("GET", "/", "shop")
                assert status in (502, 503), status
            texts[level] = rt.log_text()
    needle = f"connect 127.0.0.1:{dead}"
    assert needle in texts["debug"] and "serving" in texts["debug"], texts["debug"]
    assert needle not in texts["warning"] and "serving" not in texts["warning"], texts["warning"]
    assert len(texts["debug"]) > len(texts["warning"])


def write_certs(folder: Path) -> trustme.CA:
    """A fresh CA and a server certificate for 127.0.0.1 as certs/edge{,-key}.pem."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (folder / "certs").mkdir(parents=True)
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "certs" / "edge.pem"))
    cert.private_key_pem.write_to_path(str(folder / "certs" / "edge-key.pem"))
    return ca


def tls_spec(addr: str) -> str:
    return (
        "version: 1\n"
        "mesh: {name: shop, domain: mesh.test}\n"
        "listeners:\n"
        '  - name: edge\n    address: "127.0.0.1:0"\n'
        "    tls: {cert: certs/edge.pem, key: certs/edge-key.pem}\n"
        'admin: "127.0.0.1:0"\n'
        f'services: {{web: {{discovery: {{static: [{{address: "{addr}"}}]}}}}}}\n'
        "routes: [{name: r, match: {host: shop}, to: [{service: web}]}]\n"
    )


def https_get(port: int, ca: trustme.CA) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        conn.request("GET", "/tls", headers={"Host": "shop"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_root_resolves_relative_tls_paths(tmp_path: Path) -> None:
    """certs/edge.pem is read from --root when given, else from the folder containing DIST;
    each folder holds a certificate of a different CA, so the served one shows which was read."""
    with backend("web") as (addr, _):
        built_with = write_certs(tmp_path / "spec")
        dist = build_dist(tmp_path / "spec" / "dist", tls_spec(addr))
        moved = tmp_path / "elsewhere" / "dist"
        shutil.copytree(dist, moved)
        root_ca = write_certs(tmp_path / "root")
        with run_dist(moved, "--root", str(tmp_path / "root")) as rt:
            assert https_get(rt.port, root_ca) == (200, b"web GET /tls\n")
            with pytest.raises(ssl.SSLCertVerificationError):
                https_get(rt.port, built_with)
        # No --root: DIST/.. is the root; the spec's folder is not consulted.
        beside_ca = write_certs(tmp_path / "beside")
        shutil.copytree(dist, tmp_path / "beside" / "dist")
        with run_dist(tmp_path / "beside" / "dist") as rt:
            assert https_get(rt.port, beside_ca) == (200, b"web GET /tls\n")
        result = run_to_exit(moved)
    assert result.returncode == 1, result
    assert str(tmp_path / "elsewhere" / "certs" / "edge.pem") in result.stderr, result.stderr
