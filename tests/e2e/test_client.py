"""Mesh.load(DIST): in-process routing, split, retries across a dead endpoint, sync and async."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from runtime_harness import backend, mesh_tables, static, target, write_dist

from meshgen.runtime import tables as t

pytestmark = pytest.mark.e2e

RETRIES = t.RetryPolicy(
    attempts=2,
    per_try_timeout_s=2.0,
    backoff_base_s=0.001,
    backoff_max_s=0.002,
    budget_min_per_second=100.0,
)


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed at once: connections are refused


def test_sync_and_async_from_the_dist_copy(tmp_path: Path) -> None:
    """`from meshgen_runtime import Mesh` in a separate process routes, retries and splits."""
    with backend("a") as (a, _), backend("b") as (b, _):
        routes = [
            t.Route(
                "split",
                t.Match(hosts=("shop",), path="/split"),
                to=(target("a", 50), target("b", 50)),
            ),
            t.Route(
                "reviews", t.Match(hosts=("reviews",)), to=(target("reviews", retries=RETRIES),)
            ),
        ]
        clusters = [static("a", [a]), static("b", [b]), static("reviews", [dead_address(), a])]
        dist = write_dist(tmp_path / "dist", mesh_tables(clusters, routes))
        script = f"""
import asyncio, collections, sys
sys.path.insert(0, {str(dist)!r})
from meshgen_runtime import Mesh
from meshgen_runtime.client import MeshError
mesh = Mesh.load({str(dist)!r})
r = [mesh.request("GET", "http://reviews/x?y=1") for _ in range(20)]
assert {{x.status for x in r}} == {{200}}, [x.status for x in r]
assert r[0].body == b"a GET /x?y=1\\n", r[0].body
get = lambda: mesh.request("GET", "http://shop/split").header("x-backend")
split = collections.Counter(get() for _ in range(200))
try:
    mesh.request("GET", "http://nowhere/")
except MeshError as e:
    assert e.status == 404
mesh.close()
async def go():
    m = Mesh.load({str(dist)!r})
    resp = await m.arequest("PUT", "http://reviews/p", body=b"hi")
    await m.aclose()
    return resp
resp = asyncio.run(go())
assert resp.status == 200 and resp.body.endswith(b"hi"), resp
print(split["a"], split["b"])
"""
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    na, nb = map(int, out.stdout.split())
    assert na + nb == 200 and abs(na - 100) < 4 * (200 * 0.25) ** 0.5  # 4 sigma


def test_in_process_async(tmp_path: Path) -> None:
    """A Mesh built from Tables values works in-process too, with metrics counted."""
    from meshgen.runtime import Mesh

    with backend("a") as (a, _):
        route = t.Route("r", t.Match(hosts=("svc",)), to=(target("svc"),))
        mesh = Mesh(mesh_tables([static("svc", [a])], [route]), tmp_path)

        async def go() -> Counter[int]:
            codes = Counter(
                r.status
                for r in await asyncio.gather(
                    *(mesh.arequest("GET", "http://svc/") for _ in range(10))
                )
            )
            await mesh.aclose()
            return codes

        assert asyncio.run(go()) == Counter({200: 10})
    assert (
        'meshgen_requests_total{listener="",route="r",service="svc",subset="",code="200"} 10'
        in mesh.metrics.render()
    )
