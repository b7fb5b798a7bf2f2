"""The gRPC health probe (``upstream/grpc_probe.py``) and the prober's ``grpc`` checks.

The messages are checked against grpcio-health-checking's own protobuf classes; the prober
runs on a real event loop against a real grpcio health server (SERVING, NOT_SERVING, an
unknown service, a server without the health service), a server that does not speak HTTP/2,
a hostile HTTP/2 server (built on ``h2``) whose answer never ends, and a TLS server that
insists on ALPN h2.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from h2_passes import data_frames_per_pass
from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.codec import h2lib
from meshgen.runtime.policy.tls import TlsContexts, UpstreamTls
from meshgen.runtime.tables import (
    ClientTls,
    Cluster,
    Endpoint,
    HealthCheck,
    MeshInfo,
    StaticDiscovery,
    Tables,
)
from meshgen.runtime.upstream import grpc_probe
from meshgen.runtime.upstream.prober import Prober

grpc = pytest.importorskip("grpc", reason="grpcio not installed: pip install '.[test]'")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
from grpc_health.v1 import health, health_pb2_grpc  # noqa: E402

SERVICE = "shop.Checkout"


@given(st.text(max_size=300))
def test_the_request_is_a_health_check_request(service: str) -> None:
    message = grpc_probe.request_message(service)
    assert message[0] == 0 and int.from_bytes(message[1:5], "big") == len(message) - 5
    assert health_pb2.HealthCheckRequest.FromString(message[5:]).service == service


@given(st.sampled_from([0, 1, 2, 3]), st.binary(max_size=40))
def test_the_answers_status_is_read_past_unknown_fields(status: int, extra: bytes) -> None:
    answer = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    unknown = b"\x12" + bytes((len(extra),)) + extra  # field 2, length-delimited
    body = unknown + answer
    assert grpc_probe.response_status(body) == status
    framed = b"\x00" + len(body).to_bytes(4, "big") + body
    assert grpc_probe.serving(framed) is (status == 1)


@given(st.binary(max_size=64))
def test_any_bytes_are_a_verdict_never_an_exception(data: bytes) -> None:
    assert grpc_probe.response_status(data) is None or grpc_probe.response_status(data) >= 0
    assert isinstance(grpc_probe.serving(data), bool)


def test_a_compressed_or_second_message_is_not_serving() -> None:
    one = b"\x00\x00\x00\x00\x02\x08\x01"  # status: SERVING
    assert grpc_probe.serving(one)
    assert not grpc_probe.serving(b"\x01" + one[1:])  # compressed flag
    assert not grpc_probe.serving(one + one)


@pytest.fixture
def server() -> Iterator[tuple[int, health.HealthServicer]]:
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    checker = health.HealthServicer()
    checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield port, checker
    srv.stop(None)


def _check(service: str = SERVICE) -> HealthCheck:
    return HealthCheck("grpc", grpc_service=service, interval_s=0.1, timeout_s=1.0)


async def _probe(
    port: int, check: HealthCheck, rounds: int = 3, tls: UpstreamTls | None = None
) -> list[bool]:
    """Results of ``rounds`` probes of one endpoint (each on the kept connection)."""
    results: list[bool] = []
    prober = Prober(lambda _s, _a, ok: results.append(ok), random.Random(1))
    prober.add("svc", Endpoint("127.0.0.1", port), check, tls)
    prober.start()
    for _ in range(200):
        if len(results) >= rounds:
            break
        await asyncio.sleep(0.02)
    await prober.stop()
    return results[:rounds]


def test_serving_is_healthy_on_one_kept_connection(
    server: tuple[int, health.HealthServicer],
) -> None:
    port, _ = server
    assert asyncio.run(_probe(port, _check(), rounds=4)) == [True] * 4
    assert asyncio.run(_probe(port, _check(""), rounds=1)) == [True]  # the whole server


def test_not_serving_and_unknown_services_are_unhealthy(
    server: tuple[int, health.HealthServicer],
) -> None:
    port, checker = server
    assert asyncio.run(_probe(port, _check("shop.Unknown"), rounds=2)) == [False, False]
    checker.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert asyncio.run(_probe(port, _check(), rounds=2)) == [False, False]


async def _probe_server(serve: Callable[[], Awaitable[asyncio.Server]]) -> list[bool]:
    """Two probes of the server ``serve`` starts on 127.0.0.1 (inside the loop), then stop it."""
    srv = await serve()
    port = srv.sockets[0].getsockname()[1]
    try:
        return await _probe(port, _check(), rounds=2)
    finally:
        srv.close()


def test_a_server_that_is_not_http2_fails(tmp_path: object) -> None:
    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    serve = lambda: asyncio.start_server(http1, "127.0.0.1", 0)  # noqa: E731
    assert asyncio.run(_probe_server(serve)) == [False, False]


class _Endless(asyncio.Protocol):
    """A hostile HTTP/2 server: answers 200 and then DATA without end (as flow control lets
    it), never the trailers. ``sent`` counts the body bytes it managed to send."""

    sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.conn.send_headers(event.stream_id, [(b":status", b"200")])
                self.stream = event.stream_id
            if isinstance(event, h2.events.RequestReceived | h2.events.WindowUpdated):
                self._pump()
        self.transport.write(self.conn.data_to_send())

    def _pump(self) -> None:
        stream = getattr(self, "stream", 0)
        if not stream:
            return
        room = min(self.conn.local_flow_control_window(stream), 16384)
        while room > 0:
            self.conn.send_data(stream, b"\x00" * room)
            _Endless.sent += room
            room = min(self.conn.local_flow_control_window(stream), 16384)


def test_an_endless_answer_fails_and_flow_control_bounds_it() -> None:
    serve = lambda: asyncio.get_running_loop().create_server(_Endless, "127.0.0.1", 0)  # noqa: E731
    assert asyncio.run(_probe_server(serve)) == [False, False]
    # the window the probe announces, per probe: the server could never send more
    assert 0 < _Endless.sent <= 2 * (grpc_probe.MAX_MESSAGE_BYTES + 65535)


class _Dribbling(_Endless):
    """A hostile HTTP/2 server: answers 200, then 60,000 DATA frames of one byte in one write
    (raw frames, within the window the probe announces), never the trailers."""

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.conn.send_headers(event.stream_id, [(b":status", b"200")])
                self.transport.write(self.conn.data_to_send())
                sid = event.stream_id.to_bytes(4, "big")
                self.transport.write((b"\x00\x00\x01\x00\x00" + sid + b"x") * 60000)
        self.transport.write(self.conn.data_to_send())


def test_an_answer_of_one_byte_frames_does_not_hold_the_loop() -> None:
    """``h2`` takes ~40 us a frame, one byte of DATA too: an endpoint's 60,000 of them held
    the event loop 1.7-2.5 s (pure runtime, load 1.9) before the probe took
    ``h2lib.FRAMES_PER_PASS`` frames a pass, as the proxy's connections do. Now no pass of
    the loop works through more, and the other passes serve the rest of the loop."""

    async def main() -> Counter[int]:
        loop = asyncio.get_running_loop()
        with data_frames_per_pass() as per_pass:
            serve = lambda: loop.create_server(_Dribbling, "127.0.0.1", 0)  # noqa: E731
            assert await _probe_server(serve) == [False, False]
        return per_pass

    per_pass = asyncio.run(main())
    assert sum(per_pass.values()) > 10 * h2lib.FRAMES_PER_PASS  # (the frames came in)
    assert max(per_pass.values()) <= h2lib.FRAMES_PER_PASS, per_pass.most_common(3)


def test_a_tls_grpc_endpoint_is_checked_with_alpn_h2(tmp_path: Path) -> None:
    """grpcio refuses a TLS handshake that does not offer ALPN h2: a grpc service's context
    offers it (TlsContexts), and the probe is healthy; a context without it is not."""
    ca = trustme.CA()
    leaf = ca.issue_cert("checkout.mesh.test")
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    checker = health.HealthServicer()
    checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, srv)
    creds = grpc.ssl_server_credentials(
        [(leaf.private_key_pem.bytes(), b"".join(b.bytes() for b in leaf.cert_chain_pems))]
    )
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cfg = ClientTls(mode="simple", ca="ca.pem", sni="checkout.mesh.test")
    try:
        for protocol, expected in (("grpc", True), ("http1", False)):
            cluster = Cluster("checkout", StaticDiscovery(()), protocol=protocol)  # type: ignore[arg-type]
            tables = Tables(MeshInfo("shop", "mesh.test"), (cluster,), (), (),
                            client_tls={"checkout": cfg})  # fmt: skip
            tls = TlsContexts(tables, tmp_path).upstream("checkout")
            assert tls is not None
            got = asyncio.run(_probe(port, _check(), rounds=2, tls=tls))
            assert got == [expected] * 2, protocol
    finally:
        srv.stop(None)
