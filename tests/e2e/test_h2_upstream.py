"""HTTP/2 towards endpoints (``protocol: http2``): pooled, multiplexed connections within the
endpoint's MAX_CONCURRENT_STREAMS, HTTP/1.1 <-> HTTP/2 translation, trailers, flow control both
ways with bounded memory, refused streams and GOAWAY retried, a hostile response head refused.
The endpoint is ``h2_backend.py`` (the ``h2`` library) in its own process."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from engines import ENGINES, run_engine
from h2_peer import Peer
from haproxy_harness import build
from runtime_harness import Runtime, build_dist, memory, run_dist, script_backend, spec
from test_h2_hostile import BLOCK, MIB

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

BACKEND = Path(__file__).with_name("h2_backend.py").read_text()
RETRIES = "timeout: 60s, retries: {attempts: 2, on: [refused-stream, reset, connect-failure]}"


@contextlib.contextmanager
def proxied(
    tmp_path: Path, mode: str = "ok", max_streams: int = 100, service: str = RETRIES
) -> Iterator[Runtime]:
    """The sidecar with route ``web`` to one ``h2_backend.py`` endpoint in ``mode``."""
    with (
        script_backend(BACKEND, mode, str(max_streams)) as (address, _),
        run_dist(build_dist(tmp_path / "dist", web_spec(address, service))) as rt,
    ):
        yield rt


def web_spec(address: str, service: str = "") -> str:
    """A mesh with route ``web`` to one HTTP/2 endpoint at ``address``; ``service``: more of
    the service's fields (flow style)."""
    more = f", {service}" if service else ""
    return spec(
        f"""
        services:
          web: {{protocol: http2, discovery: {{static: [{{address: "{address}"}}]}}{more}}}
        routes:
          - {{name: web, match: {{host: web}}, to: [{{service: web}}]}}
        """
    )


def outcomes(rt: Runtime, code: str) -> int:
    found = re.findall(
        rf'meshgen_upstream_requests_total\{{[^}}]*code="{code}"[^}}]*\}} (\S+)',
        rt.admin("/metrics"),
    )
    return sum(int(float(v)) for v in found)


def concurrent(rt: Runtime, paths: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda p: rt.request("GET", p, "web"), paths))


def test_http1_clients_share_multiplexed_connections(tmp_path: Path) -> None:
    """Eight concurrent HTTP/1.1 requests travel as streams of one HTTP/2 connection (the
    first try's connection is shared while it opens), then reuse it."""
    with proxied(tmp_path) as rt:
        got = concurrent(rt, [f"/delay/300?n={i}" for i in range(8)])
        assert [s for s, _, _ in got] == [200] * 8
        assert {h["x-conn"] for _, h, _ in got} == {"1"}
        assert max(int(h["x-active"]) for _, h, _ in got) > 1  # really concurrent streams
        assert sorted(b for _, _, b in got) == sorted(
            b"GET /delay/300?n=%d 0" % i for i in range(8)
        )
        status, headers, _ = rt.request("GET", "/again", "web")
        assert (status, headers["x-conn"]) == (200, "1")
        assert headers["via"] == "1.1 meshgen"


def test_streams_stay_within_the_endpoints_limit(tmp_path: Path) -> None:
    """An endpoint announcing MAX_CONCURRENT_STREAMS 2: never more than 2 streams per
    connection; more connections are opened instead."""
    with proxied(tmp_path, max_streams=2) as rt:
        rt.request("GET", "/warm", "web")  # its SETTINGS are known from now on
        got = concurrent(rt, [f"/delay/400?n={i}" for i in range(6)])
        assert [s for s, _, _ in got] == [200] * 6
        assert max(int(h["x-active"]) for _, h, _ in got) == 2
        assert len({h["x-conn"] for _, h, _ in got}) >= 3


def test_uploads_downloads_and_trailers_translate(tmp_path: Path) -> None:
    """An HTTP/1.1 upload (sized and chunked) arrives whole; HTTP/2 trailers reach an HTTP/2
    client as trailers; an HTTP/1.1 client gets the body chunked."""
    with proxied(tmp_path) as rt:
        body = os.urandom(3 << 20)
        status, _, answer = rt.request("POST", "/up", "web", body=body)
        assert (status, answer) == (200, b"POST /up %d" % len(body))
        chunked = b"POST /up HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n"
        raw = rt.raw(chunked + b"connection: close\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"POST /up 8\r\n0\r\n\r\n")
        status, headers, answer = rt.request("GET", "/trailers", "web")
        assert (status, answer) == (200, b"GET /trailers 0")
        assert headers.get("transfer-encoding") == "chunked"
        peer = Peer(rt.port)
        (got,) = peer.wait(peer.request("/trailers", "web"))
        assert got.status == 200 and bytes(got.body) == b"GET /trailers 0"
        assert got.trailer(b"x-length") == b"15"
        peer.close()


def test_curl_http2_end_to_end(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (apt install curl)")
    with proxied(tmp_path) as rt:
        out = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-H", "host: web",
             f"http://127.0.0.1:{rt.port}/c"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert out == "GET /c 0"


def test_refused_streams_are_retried(tmp_path: Path) -> None:
    with proxied(tmp_path, mode="refuse-first") as rt:
        got = concurrent(rt, ["/a", "/b"])
        assert [s for s, _, _ in got] == [200, 200]
        assert outcomes(rt, "refused-stream") == 2


def test_refused_stream_without_the_condition_is_a_503(tmp_path: Path) -> None:
    with proxied(tmp_path, mode="refuse-first", service="retries: {attempts: 0}") as rt:
        status, _, body = rt.request("GET", "/a", "web")
        assert (status, body) == (503, b"upstream refused the stream\n")


def test_goaway_retries_unprocessed_streams_on_a_new_connection(tmp_path: Path) -> None:
    with proxied(tmp_path, mode="goaway") as rt:
        got = concurrent(rt, [f"/delay/300?n={i}" for i in range(3)])
        assert [s for s, _, _ in got] == [200, 200, 200]
        assert {h["x-conn"] for _, h, _ in got} >= {"1", "2"}
        assert outcomes(rt, "refused-stream") == 2


def test_a_response_head_over_the_limits_is_a_502(tmp_path: Path) -> None:
    with proxied(tmp_path, mode="big-head") as rt:
        status, _, _ = rt.request("GET", "/a", "web")
        assert status == 502
        assert rt.proc.poll() is None


def test_a_status_outside_200_599_is_a_502(tmp_path: Path) -> None:
    """``:status`` 000, 600 or abc on a final response (h2 passes any value on): a 502, as over
    HTTP/1.1, never a status line no client can read nor a crashed connection; the connection
    goes on serving the next request."""
    with proxied(tmp_path) as rt:
        for status in ("000", "600", "abc"):
            got, _, body = rt.request("GET", f"/status/{status}", "web")
            assert got == 502, (status, got, body)
            assert rt.request("GET", "/a", "web")[0] == 200
        assert rt.proc.poll() is None and "Traceback" not in rt.log_text()


def test_an_endpoint_flooding_pings_is_cut_off_and_the_sidecar_keeps_answering(
    tmp_path: Path,
) -> None:
    """Each PING asks for an acknowledgement, which ``h2`` makes at ~30 us a frame; an endpoint
    that sends them as fast as it can and never reads held the sidecar's event loop for 18 s
    (every listener and the admin server with it) until the socket buffers filled. Past the
    budget of 1,000 the connection is closed (GOAWAY ENHANCE_YOUR_CALM): the request fails
    at once, memory stays flat and the admin server answers all along."""
    service = "timeout: 8s, retries: {attempts: 1}"
    with proxied(tmp_path, mode="ping-flood", service=service) as rt:
        before = memory(rt.proc.pid, "VmHWM")
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(rt.request, "GET", "/never", "web", timeout=30)
            for _ in range(6):
                assert rt.admin("/healthz") == "ok\n"  # within get_text's 5 s
                time.sleep(0.5)
            assert memory(rt.proc.pid, "VmHWM") - before < 16 * MIB
            status, _, _ = waiting.result()
        assert status in (502, 503)  # the connection reset, or the endpoint already out
        assert "frames past the budget" in rt.log_text()


def slow_read(rt: Runtime, path: str, expect: int) -> int:
    """Read ``path`` over HTTP/1.1 at about 4 MiB/s; the body size read."""
    with socket.create_connection((rt.host, rt.port), timeout=30) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nhost: web\r\n\r\n" % path.encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        data = bytearray()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) >= expect:
                break
            time.sleep(0.01)
    return len(data)


def test_a_slow_reader_slows_the_endpoint_and_memory_stays_bounded(tmp_path: Path) -> None:
    """48 MiB from the endpoint to a client reading at ~4 MiB/s: the sidecar holds at most a
    stream window and its socket buffers, not the body."""
    with proxied(tmp_path) as rt:
        rt.request("GET", "/warm", "web")
        before = memory(rt.proc.pid, "VmHWM")
        assert slow_read(rt, "/big/48", 48 * MIB) >= 48 * MIB
        assert memory(rt.proc.pid, "VmHWM") - before < 24 * MIB


def test_a_slow_endpoint_slows_the_uploader_and_memory_stays_bounded(tmp_path: Path) -> None:
    """32 MiB uploaded to an endpoint that reads slowly: the client is held back."""
    with proxied(tmp_path, mode="slow-ack") as rt:
        rt.request("GET", "/warm", "web")
        before = memory(rt.proc.pid, "VmHWM")
        body = os.urandom(32 * MIB)
        status, _, answer = rt.request("POST", "/up", "web", body=body, timeout=60)
        assert (status, answer) == (200, b"POST /up %d" % len(body))
        assert memory(rt.proc.pid, "VmHWM") - before < 24 * MIB


def test_uploads_an_endpoint_does_not_read_hold_a_few_mib_a_connection(tmp_path: Path) -> None:
    """100 HTTP/1.1 clients upload 2 MiB each to an endpoint that acknowledges nothing (one
    connection, 100 streams): the connection's budget (``h2lib.Budget``) stops every client's
    side once its exchanges hold 1 MiB together (8.3 MiB grown, compiled); each exchange's
    own mark let the runtime hold 100 of 256 KiB and a read each (29.5 MiB, pure)."""
    size = 2 * MIB
    with proxied(tmp_path, mode="no-ack") as rt:
        rt.request("GET", "/warm", "web")
        before = memory(rt.proc.pid, "VmRSS")
        head = b"POST /up HTTP/1.1\r\nhost: web\r\ncontent-length: %d\r\n\r\n" % size
        clients = [small_segments(rt.port) for _ in range(100)]
        left = dict.fromkeys(clients, size)
        for client in clients:
            client.sendall(head)
            client.setblocking(False)
        grown, deadline = 0, time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for client in clients:
                with contextlib.suppress(BlockingIOError):
                    left[client] -= client.send(BLOCK[: min(left[client], len(BLOCK))])
            grown = max(grown, memory(rt.proc.pid, "VmRSS") - before)
            time.sleep(0.01)
        for client in clients:
            client.close()
        assert grown < 16 * MIB, f"{grown / MIB:.1f} MiB held for 100 unread uploads"
        assert sum(left.values()) > 50 * size  # the clients were held back


def small_segments(port: int) -> socket.socket:
    """A connection to ``port`` whose small segments and buffers keep loopback's socket
    buffers small (they otherwise grow to 4 MiB, hiding a stall)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.connect(("127.0.0.1", port))
    return s


def unread_get(port: int, path: str) -> socket.socket:
    """A client that asks for ``path`` over HTTP/1.1 and reads none of the answer
    (:func:`small_segments`)."""
    s = small_segments(port)
    s.sendall(b"GET %s HTTP/1.1\r\nhost: web\r\n\r\n" % path.encode())
    return s


@pytest.mark.parametrize("engine", ENGINES)
def test_streams_given_up_unread_give_the_connection_its_window_back(
    engine: str, tmp_path: Path
) -> None:
    """Clients that ask for 1 MiB, read none of it and go away: each of their streams to the
    endpoint holds up to a stream window of DATA nobody read (256 KiB in the runtime), and
    the runtime gave none of it back to the connection's 16 MiB window before ca0a0e3, so
    after ~64 such streams the endpoint could send nothing more on that connection. After 96
    of them, 1 MiB is answered whole on every engine."""
    with (
        script_backend(BACKEND, "ok", "100") as (address, _),
        run_engine(engine, build(web_spec(address), tmp_path / "mesh")) as proxy,
    ):
        assert proxy.request("/warm", "web")[0] == 200
        for _ in range(4):
            clients = [unread_get(proxy.port, "/big/1") for _ in range(24)]
            time.sleep(0.5)  # each stream's window fills; nobody reads
            for client in clients:
                client.close()
        status, _, body = proxy.request("/big/1", "web")
        assert (status, len(body)) == (200, MIB)
