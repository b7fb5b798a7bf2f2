"""Bodies stream through `python DIST`; they never sit in its memory (issue 4: "a 1 GiB upload
or download never sits in memory").

512 MiB goes each way through the proxy: downloads from a stdlib backend (chunked, and with
Content-Length) and a Content-Length upload from the test, made up on the fly and hashed as
they pass, never stored. The receiving side stalls for a moment first (the test before reading
a download, the backend before reading the upload), so a proxy that read ahead without
backpressure would buffer hundreds of MiB while the sender keeps writing. The proxy's peak RSS
(``VmHWM`` in /proc/PID/status) must stay under :data:`PEAK_LIMIT` (it measures ~33 MiB, the
same as idle), and the digests must match.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from runtime_harness import SERVE_HANDLER, Runtime, build_dist, run_dist, script_backend, spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MIB = 1 << 20
SIZE = 512 * MIB
CHUNK = MIB
STALL_S = 1.5
PEAK_LIMIT = 150 * MIB

BACKEND = (
    r"""
import hashlib, http.server, random, sys, time
BLOCK = random.Random(4).randbytes(1 << 20)
last = {}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/last-download":
            return self._json(last)
        framing, n = self.path.split("/")[2:]
        n, chunked = int(n), framing == "chunked"
        self.send_response(200)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(n))
        self.end_headers()
        digest, sent, i = hashlib.md5(), 0, 0
        while sent < n:
            chunk = (i.to_bytes(8, "big") + BLOCK[8:])[: n - sent]
            digest.update(chunk)
            if chunked:
                self.wfile.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                self.wfile.write(chunk)
            sent, i = sent + len(chunk), i + 1
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        last.update(bytes=sent, md5=digest.hexdigest())
    def do_PUT(self):
        time.sleep(float(self.headers.get("x-stall", "0")))
        left = int(self.headers["content-length"])
        digest, got = hashlib.md5(), 0
        while left:
            data = self.rfile.read(min(1 << 20, left))
            if not data:
                break
            digest.update(data)
            got, left = got + len(data), left - len(data)
        self._json({"bytes": got, "md5": digest.hexdigest()})
    def _json(self, obj):
        out = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a): pass
import json
"""
    + SERVE_HANDLER
)


@contextmanager
def stream_backend() -> Iterator[str]:
    with script_backend(BACKEND) as (address, _):
        yield address


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@contextmanager
def proxy(tmp_path: Path) -> Iterator[tuple[Runtime, str]]:
    with stream_backend() as addr:
        text = spec(f"""
            services:
              big:
                discovery: {{static: [{{address: "{addr}"}}]}}
                timeout: 60s
            routes: [{{name: r, match: {{host: big}}, to: [{{service: big}}]}}]
            """)
        with run_dist(build_dist(tmp_path / "dist", text)) as rt:
            yield rt, addr


def connect(rt: Runtime) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(rt.host, rt.port, timeout=30)


def connect_read(conn: http.client.HTTPConnection) -> bytes:
    resp = conn.getresponse()
    assert resp.status == 200
    return resp.read()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_download_streams_without_buffering(tmp_path: Path, framing: str) -> None:
    """512 MiB download, the client stalled before reading: peak RSS stays low."""
    with proxy(tmp_path) as (rt, _):
        baseline = peak_rss(rt.proc.pid)
        conn = connect(rt)
        conn.request("GET", f"/download/{framing}/{SIZE}", headers={"Host": "big"})
        resp = conn.getresponse()
        assert resp.status == 200
        if framing == "chunked":
            assert resp.getheader("transfer-encoding") == "chunked"
        else:
            assert resp.getheader("content-length") == str(SIZE)
        time.sleep(STALL_S)  # the backend keeps writing; only backpressure stops the proxy
        stalled_peak = peak_rss(rt.proc.pid)
        digest, got = hashlib.md5(), 0
        while data := resp.read(CHUNK):
            digest.update(data)
            got += len(data)
        conn.request("GET", "/last-download", headers={"Host": "big"})
        sent = json.loads(connect_read(conn))
        conn.close()
        peak = peak_rss(rt.proc.pid)
    assert got == SIZE and sent == {"bytes": SIZE, "md5": digest.hexdigest()}, (got, sent)
    assert peak < PEAK_LIMIT, f"peak {peak / MIB:.0f} MiB (start {baseline / MIB:.0f} MiB)"
    assert stalled_peak < baseline + 32 * MIB, (stalled_peak / MIB, baseline / MIB)


def upload_body(update: Callable[[bytes], None]) -> Iterator[bytes]:
    """SIZE bytes in CHUNK pieces, each different, passed to ``update`` as they are sent."""
    block = random.Random(5).randbytes(CHUNK)
    for i in range(SIZE // CHUNK):
        chunk = i.to_bytes(8, "big") + block[8:]
        update(chunk)
        yield chunk


def test_upload_streams_without_buffering(tmp_path: Path) -> None:
    """512 MiB Content-Length upload, the backend stalled before reading: peak RSS stays low."""
    with proxy(tmp_path) as (rt, _):
        baseline = peak_rss(rt.proc.pid)
        digest = hashlib.md5()
        conn = connect(rt)
        headers = {"Host": "big", "Content-Length": str(SIZE), "x-stall": str(STALL_S)}
        conn.request("PUT", "/upload", body=upload_body(digest.update), headers=headers)
        received = json.loads(connect_read(conn))
        conn.close()
        peak = peak_rss(rt.proc.pid)
    assert received == {"bytes": SIZE, "md5": digest.hexdigest()}, received
    assert peak < PEAK_LIMIT, f"peak {peak / MIB:.0f} MiB (start {baseline / MIB:.0f} MiB)"
