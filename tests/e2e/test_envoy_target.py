"""Envoy-only behaviour of the Envoy target, on a real Envoy: the documented deploy step of the
dynamic files reconfigures a running Envoy without a restart, and every series the Envoy
rules read exists in Envoy's own /stats/prometheus output.
"""

from __future__ import annotations

import re
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import require_binary, start_process
from envoy_harness import listener_port, run_envoy, validate
from haproxy_harness import Engine, build, one_route, poll
from runtime_harness import backend

pytestmark = pytest.mark.timeout(120)

ROUTE = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  a: {{discovery: {{static: [{{address: "{a}"}}]}}}}
  b: {{discovery: {{static: [{{address: "{b}"}}]}}}}
routes:
  - name: web
    match: {{host: web.test}}
    to: [{{service: {target}}}]
listeners: [{{name: edge, address: "127.0.0.1:0"}}]
admin: "127.0.0.1:0"
"""


def _deploy(dist: Path, root: Path) -> None:
    """docs/envoy.md's deploy step: copy next to the live file, then rename; clusters first."""
    live = root / "envoy-live"
    live.mkdir(exist_ok=True)
    for name in ("cds.json", "lds.json"):
        shutil.copy(dist / "envoy" / name, live / f".{name}")
        (live / f".{name}").rename(live / name)


def _who(engine: Engine) -> str:
    status, headers, _ = engine.request("/", "web.test")
    return headers.get("x-backend", str(status))


def test_dynamic_files_moved_in_reconfigure_without_restart(tmp_path: Path) -> None:
    """Start Envoy on dynamic.json with build 1 (route to a) moved in; move build 2 (route to
    b) in: the same Envoy process answers from b."""
    root = tmp_path / "mesh"
    with ExitStack() as stack:
        a, _ = stack.enter_context(backend("a"))
        b, _ = stack.enter_context(backend("b"))
        dist = build(ROUTE.format(a=a, b=b, target="a"), root)
        _deploy(dist, root)
        validate(dist / "envoy" / "envoy.json", root)
        admin_file = root / "admin.txt"
        argv = [require_binary("envoy"), "-c", dist / "envoy" / "dynamic.json", "--concurrency",
                "1", "--disable-hot-restart", "--admin-address-path", admin_file]  # fmt: skip
        proc = start_process(argv, root / "envoy-dynamic.log", cwd=root)
        stack.callback(proc.stop)
        proc.wait_until(lambda: admin_file.exists() and admin_file.read_text().strip() != "",
                        what="envoy")  # fmt: skip
        admin = admin_file.read_text().strip()
        poll(lambda: _listening(admin), what="listener from lds.json")
        engine = Engine("envoy", listener_port(admin, "edge"))
        poll(lambda: _who(engine) == "a", what="build 1 serves a")
        build(ROUTE.format(a=a, b=b, target="b"), root)  # a new build replaces dist/
        _deploy(dist, root)
        poll(lambda: _who(engine) == "b", what="build 2 serves b")
        assert proc.popen.poll() is None  # the same process: no restart


def _listening(admin: str) -> bool:
    try:
        listener_port(admin, "edge")
    except (AssertionError, OSError, KeyError):
        return False
    return True


METRICS = (
    """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  web:
    discovery: {{static: [{{address: "{a}"}}]}}
    health_check: {{http: {{path: /}}, interval: 1s}}
"""
    + one_route("web")
    + """\
monitoring:
  alerts:
    - {{name: errors, service: web, when: "error_rate > 5%"}}
    - {{name: rate, service: web, when: "request_rate < 1"}}
    - {{name: slow, service: web, when: "p99_latency > 1s"}}
    - {{name: few, service: web, when: "healthy_endpoints < 1"}}
    - {{name: share, service: web, when: "healthy_ratio < 50%"}}
  slos:
    - {{name: web-availability, service: web, objective: 99.9, window: 30d}}
"""
)


def test_envoy_rules_read_series_envoy_exports(tmp_path: Path) -> None:
    """After 2xx and 5xx traffic, each Envoy series rules.envoy.yml reads is in Envoy's
    /stats/prometheus with the service's cluster name (the label the rules select on)."""
    with ExitStack() as stack:
        a, _ = stack.enter_context(backend("a"))
        dist = build(METRICS.format(a=a), tmp_path / "mesh")
        envoy = stack.enter_context(run_envoy(dist))
        poll(lambda: _who(envoy) == "a", what="web up")
        for status in ("200", "503", "200"):
            envoy.request("/", "web.test", {"x-status": status})
        rules = (dist / "prometheus" / "rules.envoy.yml").read_text()
        used = set(re.findall(r"(envoy_[a-z_]+)\{envoy_cluster_name=\\?\"web\\?\"", rules))
        assert {"envoy_cluster_upstream_rq_xx", "envoy_cluster_upstream_rq_total",
                "envoy_cluster_upstream_rq_time_bucket", "envoy_cluster_membership_healthy",
                "envoy_cluster_membership_total"} <= used  # fmt: skip
        stats = envoy.admin("/stats/prometheus")
        for name in sorted(used):
            assert re.search(rf'^{name}{{[^}}]*envoy_cluster_name="web"', stats, re.M), name
        assert re.search(r'^envoy_cluster_upstream_rq_xx\{envoy_response_code_class="5",'
                         r'envoy_cluster_name="web"\} 1$', stats, re.M), stats[:2000]  # fmt: skip
