"""A gRPC client for this example: ``python client.py ADDRESS COUNT [--host HOST] [--by-server]
[--wait]``.

Makes COUNT unary ``shop.Checkout/Echo`` calls through the mesh listener at ADDRESS (the
``:authority`` is HOST, default ``checkout``: the route's host), with the client's own
retries off so that only the mesh retries, and prints how many calls ended with each gRPC
status (``OK 40``), or with ``--by-server`` how many answers came from each server name.
``--wait`` first waits (up to 10 s) until ADDRESS accepts the connection: with COUNT 0 it
only waits, e.g. for a server to listen before a proxy makes its first health checks.
"""

from __future__ import annotations

import argparse
from collections import Counter

import grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("address")
    parser.add_argument("count", type=int)
    parser.add_argument("--host", default="checkout")
    parser.add_argument("--by-server", action="store_true")
    parser.add_argument("--wait", action="store_true")
    args = parser.parse_args()
    options = [("grpc.enable_retries", 0), ("grpc.default_authority", args.host)]
    seen: Counter[str] = Counter()
    with grpc.insecure_channel(args.address, options=options) as channel:
        if args.wait:
            grpc.channel_ready_future(channel).result(timeout=10)
        echo = channel.unary_unary("/shop.Checkout/Echo")
        for _ in range(args.count):
            try:
                answer: bytes = echo(b"hello", timeout=5)
            except grpc.RpcError as error:
                seen[error.code().name] += 1
                continue
            seen[answer.split(b":")[0].decode() if args.by_server else "OK"] += 1
    for key, count in sorted(seen.items()):
        print(key, count)


if __name__ == "__main__":
    main()
