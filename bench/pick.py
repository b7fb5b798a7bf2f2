"""Benchmark: nanoseconds per ``pick`` for every load-balancer policy, 5 and 500 endpoints.

Run: ``python bench/pick.py [--picks N] [--repeat R]``. Prints a Markdown table (best of R runs,
loop overhead included, so the numbers are what a caller pays). Endpoint weights cycle 1, 2, 3
("weighted") or are all 1 ("equal"); hash policies get a distinct key per pick from a
precomputed list; least_request sees a live in-flight map with some busy endpoints. The last
row is the whole ``Upstreams.pick`` facade (cache check + balancer + ``Picked``).
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshgen.runtime.tables import (
    Cluster,
    Endpoint,
    LoadBalancer,
    MeshInfo,
    StaticDiscovery,
    Tables,
)
from meshgen.runtime.upstream.balancers import make_balancer
from meshgen.runtime.upstream.upstreams import Upstreams

POLICIES = ("round_robin", "random", "least_request", "ring_hash", "maglev")


def endpoints(n: int, weighted: bool) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(
            f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 8080, weight=1 + i % 3 if weighted else 1
        )
        for i in range(n)
    )


def time_picks(pick: Callable[[bytes | None], Endpoint], keys: list[bytes | None]) -> float:
    t0 = time.perf_counter_ns()
    for k in keys:
        pick(k)
    return (time.perf_counter_ns() - t0) / len(keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--picks", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, {args.picks} picks x best of {args.repeat}\n"
    )
    print("| policy | weights | 5 endpoints (ns/pick) | 500 endpoints (ns/pick) | build 500 (ms) |")
    print("|---|---|---:|---:|---:|")
    hashed_keys: list[bytes | None] = [f"user-{i}".encode() for i in range(args.picks)]
    plain_keys: list[bytes | None] = [None] * args.picks
    for policy in POLICIES:
        keys = hashed_keys if policy in ("ring_hash", "maglev") else plain_keys
        for weighted in (False, True):
            row = []
            build_ms = 0.0
            for n in (5, 500):
                eps = endpoints(n, weighted)
                in_flight = {e.address: i % 4 for i, e in enumerate(eps)}
                t0 = time.perf_counter()
                b = make_balancer(LoadBalancer(policy=policy), eps, random.Random(1), in_flight)
                build_ms = (time.perf_counter() - t0) * 1000
                row.append(min(time_picks(b.pick, keys) for _ in range(args.repeat)))
            label = "1,2,3" if weighted else "equal"
            print(f"| {policy} | {label} | {row[0]:.0f} | {row[1]:.0f} | {build_ms:.1f} |")
    facade = []
    for n in (5, 500):
        cluster = Cluster("svc", StaticDiscovery(endpoints(n, True)))
        ups = Upstreams(
            Tables(MeshInfo("m", "mesh.test"), (cluster,), (), ()), rng=random.Random(1)
        )

        def pick(key: bytes | None, ups: Upstreams = ups) -> Endpoint:
            picked = ups.pick("svc", None, key)
            assert picked is not None
            return picked.endpoint

        facade.append(min(time_picks(pick, plain_keys) for _ in range(args.repeat)))
    print(f"| Upstreams.pick (round_robin) | 1,2,3 | {facade[0]:.0f} | {facade[1]:.0f} | - |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
