"""gRPC through the engines, with real ``grpcio`` servers (examples/grpc/server.py) and clients.

Scenarios per engine: the four call kinds (unary, server streaming, client streaming, bidi)
balanced over two endpoints; a killed endpoint with zero failed unary calls when retries are
on; a server answering UNAVAILABLE (trailers-only) retried on another endpoint; the proxy's
own answers as gRPC statuses (no route UNIMPLEMENTED, rate limited RESOURCE_EXHAUSTED, access
denied PERMISSION_DENIED over mTLS); the caller's deadline reaching the server.

Streams cancelled mid-stream, hundreds of small messages in flight each, leave the endpoint's
connection and its other streams alone.

Engines: the runtime, HAProxy and Envoy. HAProxy 2.6 cannot retry on a gRPC status
(docs/haproxy.md, a gap): asserted as documented.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engines import run_engine
from haproxy_harness import Engine, build, poll
from runtime_harness import backend, script_backend

from meshgen.certs import MeshIdentities, issue

grpc = pytest.importorskip("grpc", reason="grpcio not installed: pip install '.[test]'")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GRPC_ENGINES = ("runtime", "haproxy", "envoy")
SERVER = (Path(__file__).resolve().parents[2] / "examples" / "grpc" / "server.py").read_text()
OPTIONS = [("grpc.enable_retries", 0), ("grpc.default_authority", "checkout")]

SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  checkout:
    protocol: grpc
    discovery: {{static: [{endpoints}]}}
    health_check: {{grpc: {{service: shop.Checkout}}, interval: 300ms, timeout: 1s,
                    unhealthy_threshold: 1}}
    timeout: 10s
    retries:
      attempts: 2
      per_try_timeout: 3s
      on: [connect-failure, reset, refused-stream, unavailable]
      backoff: {{base: 10ms, max: 50ms}}
routes:
  - name: checkout
    match: {{host: checkout}}
    to: [{{service: checkout}}]
    {route_extra}
listeners:
  - name: edge
    address: "127.0.0.1:0"
    {listener_extra}
{extra}
admin: "127.0.0.1:0"
"""


def spec(addresses: list[str], route_extra: str = "", listener_extra: str = "",
         extra: str = "") -> str:  # fmt: skip
    endpoints = ", ".join(f'{{address: "{a}"}}' for a in addresses)
    return SPEC.format(endpoints=endpoints, route_extra=route_extra,
                       listener_extra=listener_extra, extra=extra)  # fmt: skip


@contextlib.contextmanager
def servers(*names: str, mode: str = "ok") -> Iterator[dict[str, tuple[str, object]]]:
    """examples/grpc/server.py processes: name -> (address, process), killed by PID after."""
    with contextlib.ExitStack() as stack:
        yield {n: stack.enter_context(script_backend(SERVER, n, mode)) for n in names}


@contextlib.contextmanager
def channel(e: Engine, credentials: object = None) -> Iterator[grpc.Channel]:
    target = f"127.0.0.1:{e.port}"
    if credentials is None:
        ch = grpc.insecure_channel(target, options=OPTIONS)
    else:
        options = [*OPTIONS, ("grpc.ssl_target_name_override", "edge")]
        ch = grpc.secure_channel(target, credentials, options=options)
    with ch:
        yield ch


def unary(ch: grpc.Channel, request: bytes, timeout: float = 10.0) -> bytes:
    call = ch.unary_unary("/shop.Checkout/Echo")
    return call(request, timeout=timeout)  # type: ignore[no-any-return]


def code_of(ch: grpc.Channel, request: bytes = b"x") -> object:
    try:
        unary(ch, request)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("engine", GRPC_ENGINES)
def test_every_call_kind_balanced_and_a_killed_endpoint(engine: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(servers("a", "b"))
        dist = build(spec([procs["a"][0], procs["b"][0]]), tmp_path / "mesh")
        e = stack.enter_context(run_engine(engine, dist))
        ch = stack.enter_context(channel(e))
        poll(lambda: {unary(ch, b"hi") for _ in range(10)} == {b"a:hi", b"b:hi"}, what=engine)

        answers = list(ch.unary_stream("/shop.Checkout/Stream")(b"5", timeout=10))
        name = answers[0].split(b":")[0]
        assert answers == [name + b":%d" % i for i in range(5)]
        collected = ch.stream_unary("/shop.Checkout/Collect")(iter([b"x", b"y", b"z"]), timeout=10)
        assert collected.split(b":")[1] == b"x,y,z"
        chat = list(ch.stream_stream("/shop.Checkout/Chat")(iter([b"1", b"2", b"3"]), timeout=10))
        assert [m.split(b":")[1] for m in chat] == [b"1", b"2", b"3"]

        proc = procs["b"][1]
        proc.kill()  # type: ignore[attr-defined]
        proc.wait()  # type: ignore[attr-defined]
        got = [code_of(ch) for _ in range(30)]  # retries on: no call fails
        assert got == [grpc.StatusCode.OK] * 30
        assert {unary(ch, b"hi") for _ in range(10)} == {b"a:hi"}


@pytest.mark.parametrize("engine", GRPC_ENGINES)
def test_a_trailers_only_unavailable_is_retried_elsewhere(engine: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        good = stack.enter_context(servers("a"))
        shedding = stack.enter_context(servers("u", mode="unavailable"))
        dist = build(spec([good["a"][0], shedding["u"][0]]), tmp_path / "mesh")
        e = stack.enter_context(run_engine(engine, dist))
        ch = stack.enter_context(channel(e))
        poll(lambda: code_of(ch) == grpc.StatusCode.OK, what=engine)
        got = [code_of(ch) for _ in range(20)]
        if engine == "haproxy":  # cannot retry on a gRPC status: the caller sees them
            gaps = (dist / "haproxy" / "GAPS.txt").read_text()
            assert "HAProxy 2.6 cannot retry on a refused HTTP/2 stream or on a gRPC" in gaps
            assert grpc.StatusCode.UNAVAILABLE in got and grpc.StatusCode.OK in got
        else:
            assert got == [grpc.StatusCode.OK] * 20


@pytest.mark.parametrize("engine", GRPC_ENGINES)
def test_local_answers_are_grpc_statuses(engine: str, tmp_path: Path) -> None:
    """No route: UNIMPLEMENTED; over the route's rate limit: RESOURCE_EXHAUSTED."""
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(servers("a"))
        limit = "rate_limit: {requests_per_second: 1, burst: 3}"
        dist = build(spec([procs["a"][0]], route_extra=limit), tmp_path / "mesh")
        e = stack.enter_context(run_engine(engine, dist))
        ch = stack.enter_context(channel(e))
        got = [code_of(ch) for _ in range(10)]
        assert got[0] == grpc.StatusCode.OK and set(got) == {
            grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
        }  # fmt: skip
        nowhere = grpc.insecure_channel(
            f"127.0.0.1:{e.port}", options=[("grpc.default_authority", "nowhere")]
        )
        with nowhere:
            assert code_of(nowhere) == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("engine", GRPC_ENGINES)
def test_the_callers_deadline_reaches_the_server(engine: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(servers("a"))
        dist = build(spec([procs["a"][0]]), tmp_path / "mesh")
        e = stack.enter_context(run_engine(engine, dist))
        ch = stack.enter_context(channel(e))
        left = float(unary(ch, b"deadline", timeout=3.0))
        assert 1.0 < left <= 3.1  # (grpc-core rounds the grpc-timeout it sends up a little)
        assert unary(ch, b"deadline", timeout=None) == b"none"  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", GRPC_ENGINES)
def test_access_denied_is_permission_denied(engine: str, tmp_path: Path) -> None:
    """mTLS with ALPN h2: a rule allows Echo to any caller; Stream is denied."""
    root = tmp_path / "mesh"
    certs = root / "certs"
    issue(MeshIdentities("shop", "mesh.test", ("edge", "frontend", "checkout")), certs)
    tls = ("tls: {cert: certs/edge.pem, key: certs/edge-key.pem, ca: certs/ca.pem, "
           "client_certificates: required}")  # fmt: skip
    rules = 'access:\n  - {from: "*", to: checkout, paths: [/shop.Checkout/Echo]}'
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(servers("a"))
        dist = build(spec([procs["a"][0]], listener_extra=tls, extra=rules), root)
        e = stack.enter_context(run_engine(engine, dist))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(certs / "ca.pem").read_bytes(),
            private_key=(certs / "frontend-key.pem").read_bytes(),
            certificate_chain=(certs / "frontend.pem").read_bytes(),
        )
        ch = stack.enter_context(channel(e, credentials))
        assert unary(ch, b"hi") == b"a:hi"
        with pytest.raises(grpc.RpcError) as denied:
            list(ch.unary_stream("/shop.Checkout/Stream")(b"2", timeout=10))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("engine", GRPC_ENGINES)
def test_streams_cancelled_mid_stream_leave_the_others_alone(engine: str, tmp_path: Path) -> None:
    """A server streaming small messages sends a DATA frame a message: when a caller cancels,
    the proxy resets the stream and the endpoint's frames already in flight on it (hundreds:
    170-700 a reset measured through the runtime) arrive on a closed stream. They are no flood:
    4 callers cancelling streams for 4 s leave a long stream on the same endpoint connection
    running. (The runtime allowed 32 such frames a reset before it allowed the stream's
    window: it closed that connection with ENHANCE_YOUR_CALM about once a second, failing
    its streams.) HAProxy 2.6 and Envoy 1.40 take them too."""
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(servers("a"))
        text = spec([procs["a"][0]]).replace("timeout: 10s", "timeout: 60s")
        text = text.replace("per_try_timeout: 3s", "")  # (Envoy's time a whole stream)
        dist = build(text, tmp_path / "mesh")
        e = stack.enter_context(run_engine(engine, dist))
        ch = stack.enter_context(channel(e))
        poll(lambda: code_of(ch) == grpc.StatusCode.OK, what=engine)
        stream = ch.unary_stream("/shop.Checkout/Stream")
        witness = stream(b"1000000000", timeout=60)
        failed: list[str] = []
        cancelled, witnessed = [0], [0]
        stop = time.monotonic() + 4.0

        def watch() -> None:
            try:
                for _ in witness:
                    witnessed[0] += 1
                    if time.monotonic() > stop + 0.5:
                        break
            except grpc.RpcError as error:
                failed.append(f"the long stream: {error.code()} {error.details()}")

        def cancel() -> None:
            while time.monotonic() < stop and not failed:
                call = stream(b"1000000000", timeout=10)
                try:
                    for _ in zip(range(50), call, strict=False):
                        pass
                except grpc.RpcError as error:
                    failed.append(f"{error.code()} {error.details()}")
                    return
                call.cancel()
                cancelled[0] += 1

        threads = [threading.Thread(target=watch)]
        threads += [threading.Thread(target=cancel) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        witness.cancel()
        assert failed == []
        assert cancelled[0] >= 10 and witnessed[0] >= 1000, (cancelled, witnessed)


def test_grpc_over_http1_gets_a_grpc_status_at_once(tmp_path: Path) -> None:
    """The runtime: a gRPC request that came over HTTP/1.1 cannot carry trailers, so it
    is answered at once with INTERNAL and never forwarded."""
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(servers("a"))
        dist = build(spec([procs["a"][0]]), tmp_path / "mesh")
        e = stack.enter_context(run_engine("runtime", dist))
        status, headers, body = e.request(
            "/shop.Checkout/Echo", "checkout", {"content-type": "application/grpc"}, "POST"
        )
        assert (status, headers["grpc-status"], body) == (200, "13", b"")
        assert "HTTP/2" in headers["grpc-message"]
        metrics = e.admin("/metrics")  # type: ignore[attr-defined]
        assert 'code="200",grpc_status="13"} 1' in metrics


def test_the_runtime_checks_grpc_health_over_http2(tmp_path: Path) -> None:
    """A grpcio server answering SERVING is healthy; an HTTP/1.1 server on the other endpoint
    accepts connections (a TCP check would pass) but cannot answer grpc.health.v1: unhealthy."""
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(servers("a"))
        http1, _ = stack.enter_context(backend("h1"))
        dist = build(spec([procs["a"][0], http1]), tmp_path / "mesh")
        e = stack.enter_context(run_engine("runtime", dist))

        def healthy() -> dict[str, str]:
            metrics = e.admin("/metrics")  # type: ignore[attr-defined]
            found = re.findall(r'meshgen_endpoint_healthy\{[^}]*endpoint="([^"]+)"[^}]*\} (\d)',
                               metrics)  # fmt: skip
            return dict(found)

        want = {procs["a"][0]: "1", http1: "0"}
        poll(lambda: healthy() == want, what="grpc health verdicts")
        time.sleep(1.0)  # several more probes (every 300ms): "a" stays healthy on SERVING
        assert healthy() == want
