"""Mesh.load(DIST): in-process routing, split, retries across a dead endpoint, sync and async."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from ports import refused_port
from runtime_harness import backend, build_dist, compile_tables, run_dist, spec

pytestmark = pytest.mark.e2e

RETRIES = (
    "{attempts: 2, per_try_timeout: 2s, backoff: {base: 1ms, max: 2ms}, "
    "budget: {min_per_second: 100}}"
)


def test_sync_and_async_from_the_dist_copy(tmp_path: Path) -> None:
    """`from meshgen_runtime import Mesh` in a separate process routes, retries and splits."""
    with backend("a") as (a, _), backend("b") as (b, _), refused_port() as dead:
        text = spec(
            f"""
            services:
              a: {{discovery: {{static: [{{address: "{a}"}}]}}}}
              b: {{discovery: {{static: [{{address: "{b}"}}]}}}}
              reviews:
                discovery: {{static: [{{address: "127.0.0.1:{dead}"}}, {{address: "{a}"}}]}}
                retries: {RETRIES}
            routes:
              - name: split
                match: {{host: shop, path_prefix: /split}}
                to: [{{service: a, weight: 50}}, {{service: b, weight: 50}}]
              - name: reviews
                match: {{host: reviews}}
                to: [{{service: reviews}}]
            """
        )
        dist = build_dist(tmp_path / "dist", text)
        script = f"""
import asyncio, collections, sys
sys.path.insert(0, {str(dist)!r})
from meshgen_runtime import Mesh, MeshError
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
        text = spec(
            f"""
            services: {{svc: {{discovery: {{static: [{{address: "{a}"}}]}}}}}}
            routes: [{{name: r, match: {{host: svc}}, to: [{{service: svc}}]}}]
            """
        )
        mesh = Mesh(compile_tables(text, tmp_path), tmp_path)

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
        'meshgen_requests_total{listener="",route="r",service="svc",subset="",code="200",'
        'grpc_status=""} 10' in mesh.metrics.render()
    )


def test_the_client_sends_the_head_the_proxy_sends(tmp_path: Path) -> None:
    """A route with ``rewrite`` and a request header ``set``: the endpoint gets the same path,
    Host and headers through ``Mesh.request`` as through the sidecar (one head builder)."""
    from meshgen.runtime import Mesh

    with backend("a") as (a, _):
        text = spec(
            f"""
            services: {{items: {{discovery: {{static: [{{address: "{a}"}}]}}}}}}
            routes:
              - name: items
                match: {{host: shop, path_prefix: /v1/}}
                to: [{{service: items}}]
                rewrite: {{path_prefix: /internal/, host: items.internal}}
                headers: {{request: {{set: {{x-env: prod}}, remove: [x-debug]}}}}
            """
        )
        dist = build_dist(tmp_path / "dist", text)
        headers = {"x-debug": "1", "x-request-id": "r-1", "x-forwarded-for": "10.1.1.1"}
        with run_dist(dist) as rt:
            status, got, body = rt.request("GET", "/v1/items?q=2", "shop", headers)
        assert status == 200
        mesh = Mesh(compile_tables(text, tmp_path), tmp_path)
        try:
            resp = mesh.request("GET", "http://shop/v1/items?q=2", headers)
        finally:
            mesh.close()
    assert resp.status == 200 and resp.body == body == b"a GET /internal/items?q=2\n"
    echoed = {k: v for k, v in got.items() if k.startswith("echo-")}
    assert echoed == {
        "echo-host": "items.internal",
        "echo-x-env": "prod",
        "echo-x-request-id": "r-1",
        "echo-x-forwarded-for": "10.1.1.1, 127.0.0.1",
        "echo-via": "1.1 meshgen",
    }
    assert {k: v for k, v in resp.headers if k.startswith("echo-")} == echoed
