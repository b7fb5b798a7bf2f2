"""HTTP/2 clients on an ``http`` listener (the downstream half of the runtime's HTTP/2): curl
with prior knowledge (h2c) and over TLS with ALPN, and an ``h2`` client for what curl cannot
show (many streams at once on one connection, trailers, gRPC's trailers-only answers).

The endpoints speak HTTP/1.1 (subprocess servers): each stream is translated to an HTTP/1.1
request and its response back, trailers of a chunked response included. The same port keeps
serving HTTP/1.1.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path

import h2_peer
import pytest
from h2_peer import Peer
from runtime_harness import SERVE_HANDLER, Runtime

from meshgen.certs import MeshIdentities, issue

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

BACKEND = (
    r"""
import hashlib, http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _body(self):
        if self.headers.get("transfer-encoding") == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline(), 16)
                if not size:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))
    def do_GET(self):
        out = ("%s %s host=%s te=%s\n" % (self.command, self.path, self.headers.get("host"),
               self.headers.get("te"))).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(out)))
        self.send_header("connection", "keep-alive, x-drop")
        self.send_header("x-drop", "1")
        self.end_headers()
        self.wfile.write(out)
    def do_POST(self):
        data = self._body()
        framing = "chunked" if self.headers.get("transfer-encoding") else "length"
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("trailer", "x-md5")
        self.send_header("x-framing", framing)
        self.end_headers()
        for i in range(0, len(data), 65536):
            piece = data[i : i + 65536]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        md5 = hashlib.md5(data).hexdigest().encode()
        self.wfile.write(b"0\r\nx-md5: %s\r\ngrpc-status: 0\r\n\r\n" % md5)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.request_queue_size = 256  # 100 streams connect at once
"""
    + SERVE_HANDLER
)


def _need(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is missing: apt-get install {package}")
        pytest.skip(f"{binary} is missing: apt-get install {package}")


def proxied(tmp_path: Path, listener: str = "", extra: str = "") -> ContextManager[Runtime]:
    return h2_peer.proxied(tmp_path, BACKEND, listener, extra=extra)


def curl(*args: str) -> tuple[str, str]:
    """Run curl; (stdout, stderr)."""
    done = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_curl_prior_knowledge_and_http1_on_one_port(tmp_path: Path) -> None:
    _need("curl", "curl")
    with proxied(tmp_path) as rt:
        url = f"http://127.0.0.1:{rt.port}/a?b=1"
        out, err = curl("--http2-prior-knowledge", "-v", "-H", "host: web", url)
        assert "< HTTP/2 200" in err
        assert out == "GET /a?b=1 host=web te=None\n"
        assert "< x-drop" not in err and "< connection" not in err  # Connection-listed: dropped
        assert "< via: 1.1 meshgen" in err
        out, err = curl("--http2-prior-knowledge", "-v", "-H", "host: nope", url)
        assert "< HTTP/2 404" in err and "no route" in out
        # HTTP/1.1 on the same listener, as before
        status, _, body = rt.request("GET", "/a", "web")
        assert (status, body) == (200, b"GET /a host=web te=None\n")
        metrics = rt.admin("/metrics")
        assert re.search(
            r'meshgen_requests_total\{listener="edge",route="web".*code="200".*\} 2', metrics
        )


def test_uploads_and_trailers(tmp_path: Path) -> None:
    """A body with content-length and one without (chunked to HTTP/1.1), 3 MiB each, come
    back whole with the chunked response's trailers as HTTP/2 trailers."""
    with proxied(tmp_path) as rt:
        body = os.urandom(3 << 20)
        peer = Peer(rt.port)
        sized = peer.request("/up", "web", "POST", [("content-length", str(len(body)))], body)
        bare = peer.request("/up", "web", "POST", [], body)
        for sid, framing in ((sized, b"length"), (bare, b"chunked")):
            (answer,) = peer.wait(sid, timeout=30)
            assert answer.status == 200
            assert answer.header(b"x-framing") == framing
            assert bytes(answer.body) == body
            assert answer.trailer(b"x-md5") == hashlib.md5(body).hexdigest().encode()
        peer.close()


def test_many_streams_on_one_connection(tmp_path: Path) -> None:
    """100 concurrent streams (the announced maximum) on one connection: each answer is its
    own request's."""
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        peer.receive()  # the server's SETTINGS
        assert peer.h2.remote_settings.max_concurrent_streams == 100
        sids = {peer.request(f"/s/{i}", "web"): i for i in range(100)}
        answers = peer.wait(*sids, timeout=30)
        for sid, answer in zip(sids, answers, strict=True):
            assert answer.status == 200
            assert bytes(answer.body) == b"GET /s/%d host=web te=None\n" % sids[sid]

        # and again, with bodies, from several connections at once
        def run(n: int) -> bool:
            p = Peer(rt.port)
            ids = [
                p.request(f"/p/{n}/{i}", "web", "POST", [], b"%d-%d" % (n, i)) for i in range(20)
            ]
            got = p.wait(*ids, timeout=30)
            p.close()
            return all(bytes(a.body) == b"%d-%d" % (n, i) for i, a in enumerate(got))

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(run, range(4)))
        peer.close()


def test_grpc_local_answers_are_trailers_only(tmp_path: Path) -> None:
    """A gRPC request over HTTP/2 that the proxy answers itself: HTTP 200, grpc-status in the
    head and no body (no route: UNIMPLEMENTED 12); counted with its grpc_status label."""
    with proxied(tmp_path) as rt:
        peer = Peer(rt.port)
        grpc_head = [("content-type", "application/grpc"), ("te", "trailers")]
        answer = peer.get("/pkg.Svc/Call", "nowhere", method="POST", headers=grpc_head,
                          body=b"\x00\x00\x00\x00\x00")  # fmt: skip
        assert answer.status == 200
        assert answer.header(b"grpc-status") == b"12"
        assert answer.header(b"content-type") == b"application/grpc"
        assert answer.body == b"" and answer.trailers == []
        # the same request over HTTP/1.1 is told at once that gRPC needs HTTP/2
        status, headers, _ = rt.request("POST", "/pkg.Svc/Call", "web",
                                        {"content-type": "application/grpc"}, b"")  # fmt: skip
        assert status == 200 and headers["grpc-status"] == "13"
        assert 'grpc_status="12"' in rt.admin("/metrics")
        peer.close()


def test_limits_answer_the_stream_and_keep_the_connection(tmp_path: Path) -> None:
    """Too many header fields (431) and a long :path (414) refuse that stream only."""
    with proxied(tmp_path, listener="limits: {request_headers: 10, url_bytes: 100}") as rt:
        peer = Peer(rt.port)
        many = [(f"x-h{i}", "v") for i in range(11)]
        assert peer.get("/", "web", headers=many).status == 431
        assert peer.get("/" + "a" * 200, "web").status == 414
        assert peer.get("/ok", "web").status == 200
        metrics = rt.admin("/metrics")
        assert 'reason="request_headers"} 1' in metrics and 'reason="url_bytes"} 1' in metrics
        peer.close()


def test_idle_connection_gets_goaway(tmp_path: Path) -> None:
    with proxied(
        tmp_path, listener="limits: {client_idle_timeout: 1s, request_head_timeout: 1s}"
    ) as rt:
        peer = Peer(rt.port)
        assert peer.get("/", "web").status == 200
        assert peer.wait_closed(timeout=5)
        assert peer.goaway == 0  # NO_ERROR


def test_tls_alpn_h2_with_client_certificates(tmp_path: Path) -> None:
    """ALPN offers h2 and http/1.1 on a TLS listener; a caller's certificate identity is
    checked by the access rules exactly as over HTTP/1.1."""
    _need("curl", "curl")
    root = tmp_path
    certs = root / "certs"
    issue(MeshIdentities("shop", "mesh.test", ("edge", "frontend", "intruder")), certs)
    tls = (
        "tls: {cert: certs/edge.pem, key: certs/edge-key.pem, ca: certs/ca.pem, "
        "client_certificates: required}"
    )
    rules = "access: [{from: frontend, to: web}]"
    with proxied(root, listener=tls, extra=rules) as rt:
        base = ["--cacert", str(certs / "ca.pem"), "--resolve", f"edge:{rt.port}:127.0.0.1",
                "-H", "host: web", "-o", "/dev/null",
                "-w", "%{http_version} %{http_code}"]  # fmt: skip
        url = f"https://edge:{rt.port}/x"

        def who(name: str, *extra: str) -> str:
            cert = ["--cert", str(certs / f"{name}.pem"), "--key", str(certs / f"{name}-key.pem")]
            return curl(*base, *cert, *extra, url)[0]

        assert who("frontend", "--http2") == "2 200"
        assert who("intruder", "--http2") == "2 403"
        assert who("frontend", "--http1.1") == "1.1 200"
        # the negotiated protocol, seen by a plain TLS client
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        ctx.load_cert_chain(certs / "frontend.pem", certs / "frontend-key.pem")
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", rt.port), 5)
        with ctx.wrap_socket(raw, server_hostname="edge") as s:
            assert s.selected_alpn_protocol() == "h2"
            peer = Peer(rt.port, sock=s)
            assert peer.get("/y", "web").status == 200
