"""A gRPC server for this example and meshgen's gRPC tests: ``python server.py NAME [MODE [PORT]]``.

It prints the port it bound on 127.0.0.1 (PORT, default any free one), then serves
``shop.Checkout`` with grpc's generic handlers on raw bytes (no generated protobuf code), and
``grpc.health.v1`` with ``shop.Checkout`` SERVING:

- ``Echo`` (unary): ``NAME:`` + the request. A request ``deadline`` answers the time the
  server has left (``context.time_remaining()``, seconds as text; ``none`` without one:
  grpcio reports years then).
- ``Stream`` (server streaming): the request is a count N; N messages ``NAME:i``.
- ``Collect`` (client streaming): ``NAME:`` + the messages joined with ``,``.
- ``Chat`` (bidi): each message back as ``NAME:`` + message, as it arrives.

MODE ``ok`` (the default) answers as above; ``unavailable``: every call ends UNAVAILABLE (a
trailers-only answer), as a server shedding load does; the health service still says SERVING.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

NAME = sys.argv[1].encode()
MODE = sys.argv[2] if len(sys.argv) > 2 else ""
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 0


def _check(context: grpc.ServicerContext) -> None:
    if MODE == "unavailable":
        context.abort(grpc.StatusCode.UNAVAILABLE, f"{NAME.decode()} is shedding load")


def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    _check(context)
    if request == b"deadline":
        left = context.time_remaining()
        return b"none" if left is None or left > 1e9 else repr(left).encode()
    return NAME + b":" + request


def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    _check(context)
    for i in range(int(request)):
        yield NAME + b":%d" % i


def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    _check(context)
    return NAME + b":" + b",".join(requests)


def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    _check(context)
    for message in requests:
        yield NAME + b":" + message


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("shop.Checkout", handlers),)
    )
    checker = health.HealthServicer()
    checker.set("shop.Checkout", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port(f"127.0.0.1:{PORT}")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
