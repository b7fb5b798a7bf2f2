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
from haproxy_harness import Engine, build, poll
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


METRICS = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  web:
    discovery: {{static: [{{address: "{a}", labels: {{v: "1"}}}}]}}
    subsets: {{v1: {{labels: {{v: "1"}}}}}}
    health_check: {{http: {{path: /}}, interval: 1s}}
routes:
  - {{name: web, match: {{host: web.test}}, to: [{{service: web}}]}}
  - {{name: v1, match: {{host: v1.test}}, to: [{{service: web, subset: v1}}]}}
listeners: [{{name: edge, address: "127.0.0.1:0"}}]
admin: "127.0.0.1:0"
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
SERIES = re.compile(
    r'^(envoy_[a-z_]+)\{(?:[^}]*,)?envoy_cluster_name="([^"]+)"[^}]*\} (\S+)$', re.M
)


def test_envoy_rules_read_series_envoy_exports(tmp_path: Path) -> None:
    """After 2xx and 5xx traffic, each Envoy series rules.envoy.yml reads is in Envoy's
    /stats/prometheus under the cluster names the rules select: the endpoint gauges on the
    service's cluster, the traffic on the service's and its subset's (``web~v1``, where a
    route to the subset is counted), so error_rate sees the 5xx sent through the subset."""
    with ExitStack() as stack:
        a, _ = stack.enter_context(backend("a"))
        dist = build(METRICS.format(a=a), tmp_path / "mesh")
        envoy = stack.enter_context(run_envoy(dist))
        poll(lambda: _who(envoy) == "a", what="web up")
        envoy.request("/", "web.test", {"x-status": "200"})
        envoy.request("/", "v1.test", {"x-status": "503"})
        rules = (dist / "prometheus" / "rules.envoy.yml").read_text()
        gauges = set(re.findall(r"(envoy_[a-z_]+)\{envoy_cluster_name=\"web\"", rules))
        traffic = set(re.findall(r"(envoy_[a-z_]+)\{envoy_cluster_name=~\"([^\"]+)\"", rules))
        assert gauges == {"envoy_cluster_membership_healthy", "envoy_cluster_membership_total"}
        assert {name for name, _ in traffic} == {"envoy_cluster_upstream_rq_xx",
            "envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_time_bucket"}  # fmt: skip
        (pattern,) = {regex for _, regex in traffic}
        text = envoy.admin("/stats/prometheus")
        stats = SERIES.findall(text)
        for name in gauges:
            assert any(n == name and c == "web" for n, c, _ in stats), name
        for name, _ in traffic:
            assert {c for n, c, _ in stats if n == name} >= {"web", "web~v1"}, name
        counted = {c for n, c, v in stats if n == "envoy_cluster_upstream_rq_total" and float(v)}
        assert {c for c in counted if re.fullmatch(pattern, c)} == {"web", "web~v1"}
        assert re.search(r'^envoy_cluster_upstream_rq_xx\{envoy_response_code_class="5",'
                         r'envoy_cluster_name="web~v1"\} 1$', text, re.M), text[:2000]  # fmt: skip
