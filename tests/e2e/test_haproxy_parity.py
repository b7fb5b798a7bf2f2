"""The same mesh on the embedded runtime and on HAProxy must give the same outcomes.

Each scenario sends the same requests through both engines, built from one mesh.yaml, against
the same killable subprocess backends: host/path routing, 404, redirect, header operations,
the weighted split, a killed backend leaving rotation, and the backup service taking over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from haproxy_harness import Engine, build, poll, run_haproxy, run_runtime
from runtime_harness import backend

pytestmark = pytest.mark.timeout(120)

SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  web:
    discovery:
      static:
        - {{address: "{a1}", labels: {{version: v1}}}}
        - {{address: "{a2}", labels: {{version: v2}}}}
    subsets:
      v1: {{labels: {{version: v1}}}}
      v2: {{labels: {{version: v2}}}}
    health_check:
      http: {{path: /healthz}}
      interval: 200ms
      timeout: 500ms
      healthy_threshold: 1
      unhealthy_threshold: 2
    failover: {{backup: dr}}
  dr:
    discovery:
      static:
        - {{address: "{b}"}}
routes:
  - name: old
    match: {{host: old.test}}
    redirect: {{location: "https://new.example/x?y=1", status: 302}}
  - name: split
    match: {{host: split.test}}
    to:
      - {{service: web, subset: v1, weight: 70}}
      - {{service: web, subset: v2, weight: 30}}
  - name: api
    match: {{host: web.test, path_prefix: /api/}}
    to:
      - {{service: web, subset: v2}}
    headers:
      request: {{set: {{x-env: prod}}}}
      response: {{set: {{x-served-by: meshgen}}, remove: [server]}}
  - name: web
    match: {{host: web.test}}
    to:
      - {{service: web}}
listeners:
  - {{name: edge, address: "127.0.0.1:0"}}
admin: 127.0.0.1:0
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[list[Engine], dict[str, object]]]:
    """Backends a1 (v1), a2 (v2), b (dr) and both engines on one build."""
    with ExitStack() as stack:
        procs = {n: stack.enter_context(backend(n)) for n in ("a1", "a2", "b")}
        spec = SPEC.format(**{n: addr for n, (addr, _) in procs.items()})
        dist = build(spec, tmp_path / "mesh")
        engines = [stack.enter_context(run_runtime(dist)), stack.enter_context(run_haproxy(dist))]
        for e in engines:  # both see every backend up before scenarios start
            poll(lambda e=e: len({_who(e, "web.test") for _ in range(6)}) == 2, what=e.name)
        yield engines, {n: p for n, (_, p) in procs.items()}


def _who(engine: Engine, host: str, path: str = "/") -> str:
    status, headers, _ = engine.request(path, host)
    return headers.get("x-backend", str(status))


def test_routing_404_redirect_and_headers(mesh: tuple[list[Engine], dict[str, object]]) -> None:
    """Host (case, port, trailing dot ignored), path prefix, 404, redirect, header ops agree."""
    engines, _ = mesh
    for e in engines:
        assert _who(e, "WEB.test.:8080", "/api/x") == "a2", e.name
        assert {_who(e, "web.test", "/other") for _ in range(4)} == {"a1", "a2"}, e.name
        assert e.request("/", "nope.test")[0] == 404, e.name
        status, headers, _ = e.request("/", "old.test")
        assert (status, headers.get("location")) == (302, "https://new.example/x?y=1"), e.name
        status, headers, _ = e.request("/api/", "web.test")
        assert status == 200 and headers["echo-x-env"] == "prod", e.name
        assert headers["x-served-by"] == "meshgen" and "server" not in headers, e.name


def test_weighted_split(mesh: tuple[list[Engine], dict[str, object]]) -> None:
    """70/30 split: both engines within 4 sigma of 70% over 200 requests."""
    engines, _ = mesh
    for e in engines:
        counts = Counter(_who(e, "split.test") for _ in range(200))
        assert set(counts) == {"a1", "a2"}, (e.name, counts)
        assert 0.57 <= counts["a1"] / 200 <= 0.83, (e.name, counts)


def test_killed_backend_leaves_rotation_then_backup(
    mesh: tuple[list[Engine], dict[str, object]],
) -> None:
    """Kill a2: both engines send web traffic to a1 only; kill a1 too: both use dr (b)."""
    engines, procs = mesh
    procs["a2"].kill()  # type: ignore[attr-defined]
    for e in engines:
        poll(lambda e=e: {_who(e, "web.test") for _ in range(6)} == {"a1"}, what=e.name)
        # the v2 subset has no healthy endpoint but the service has: 503, no fallback
        assert e.request("/api/", "web.test")[0] == 503, e.name
    procs["a1"].kill()  # type: ignore[attr-defined]
    for e in engines:
        poll(lambda e=e: {_who(e, "web.test") for _ in range(4)} == {"b"}, what=e.name)
        assert _who(e, "split.test") == "b", e.name
