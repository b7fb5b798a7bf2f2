"""HAProxy and Envoy targets for ``http2`` and ``grpc`` services: HTTP/2 to the endpoints, gRPC
health checks, gRPC retry conditions, gRPC answers, the gaps; both configs checked by the real
binaries (``haproxy -c``, ``envoy --mode validate``). That they forward gRPC as the runtime
does is tests/e2e/test_parity_grpc.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import assert_envoy_accepts, require_binary

from meshgen import pipeline
from meshgen.targets.envoy_clusters import UPSTREAM_HTTP2

MESH = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  checkout:
    protocol: grpc
    discovery: {static: [{address: 127.0.0.1:9091}, {address: 127.0.0.1:9092}]}
    health_check: {grpc: {service: shop.Checkout}, interval: 2s}
    timeout: 3s
    retries:
      attempts: 2
      per_try_timeout: 1s
      on: [unavailable, resource-exhausted, refused-stream, cancelled, deadline-exceeded, internal]
  search:
    protocol: http2
    discovery: {static: [{address: 127.0.0.1:9093}]}
    health_check: {http: {path: /healthz}}
    rate_limit: {requests_per_second: 5, burst: 5}
  web:
    discovery: {static: [{address: 127.0.0.1:9094}]}
routes:
  - name: checkout
    match: {host: checkout}
    to: [{service: checkout}]
    rate_limit: {requests_per_second: 10, burst: 10}
  - name: search
    match: {host: search}
    to: [{service: search}]
  - name: web
    match: {host: web}
    to: [{service: web}]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("grpc-targets")
    (folder / "mesh.yaml").write_text(MESH)
    return folder


@pytest.fixture(scope="module")
def files(folder: Path) -> dict[str, str]:
    result = pipeline.compile_spec(folder / "mesh.yaml")
    assert result.files is not None, [d.message for d in result.diagnostics]
    return result.files


def _section(text: str, title: str) -> list[str]:
    lines = text.split(title + "\n", 1)[1].split("\n\n", 1)[0]
    return [ln.strip() for ln in lines.splitlines()]


def _cluster(files: dict[str, str], name: str) -> dict[str, Any]:
    config = json.loads(files["envoy/envoy.json"])
    found: dict[str, Any] = next(
        c for c in config["static_resources"]["clusters"] if c["name"] == name
    )
    return found


def _route(files: dict[str, str], name: str) -> dict[str, Any]:
    lds = json.loads(files["envoy/lds.json"])
    text = json.dumps(lds)
    assert name in text
    for resource in lds["resources"]:
        for chain in resource["filter_chains"]:
            hcm = chain["filters"][-1]["typed_config"]
            for vhost in hcm["route_config"]["virtual_hosts"]:
                for route in vhost["routes"]:
                    if route.get("name") == name:
                        found: dict[str, Any] = route
                        return found
    raise AssertionError(name)


def test_haproxy_speaks_h2_to_http2_and_grpc_servers_only(files: dict[str, str]) -> None:
    cfg = files["haproxy/haproxy.cfg"]
    checkout = _section(cfg, "backend checkout")
    assert all(" proto h2 check" in ln for ln in checkout if ln.startswith("server "))
    search = _section(cfg, "backend search")
    assert any(ln.endswith(" proto h2 check-proto h2 check") for ln in search), search
    assert "option httpchk GET /healthz" in search
    assert not any("proto h2" in ln for ln in _section(cfg, "backend web"))


def test_haproxy_answers_grpc_callers_with_grpc_statuses(files: dict[str, str]) -> None:
    edge = _section(files["haproxy/haproxy.cfg"], "frontend edge")
    assert "acl mg.grpc req.hdr(content-type) -i -m reg ^application/grpc([+;]|$)" in edge
    grpc_404 = next(i for i, ln in enumerate(edge) if "grpc-status 12" in ln)
    assert edge[grpc_404].endswith("if mg.grpc !mg.routed")
    assert edge[grpc_404 + 1].startswith("http-request return status 404")  # everyone else
    limited = [ln for ln in edge if "grpc-status 8" in ln]
    assert len(limited) == 2  # the route's bucket and the service's
    assert all(ln.startswith("http-request return status 200 hdr grpc-status 8")
               for ln in limited)  # fmt: skip


def test_haproxy_gaps_name_grpc_checks_and_retry_conditions(files: dict[str, str]) -> None:
    gaps = files["haproxy/GAPS.txt"]
    assert "service 'checkout' health_check.grpc: HAProxy 2.6 has no gRPC health check" in gaps
    assert "service 'checkout' retries.on: HAProxy 2.6 cannot retry on a refused HTTP/2" in gaps


def test_envoy_clusters_speak_http2_and_check_with_grpc_health(files: dict[str, str]) -> None:
    options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    for name in ("checkout", "search"):
        opts = _cluster(files, name)["typed_extension_protocol_options"][options]
        assert opts["explicit_http_config"] == {"http2_protocol_options": UPSTREAM_HTTP2}
    assert "typed_extension_protocol_options" not in _cluster(files, "web")
    (check,) = _cluster(files, "checkout")["health_checks"]
    assert check["grpc_health_check"] == {"service_name": "shop.Checkout"}


def test_envoy_routes_retry_grpc_conditions_and_cap_by_grpc_timeout(
    files: dict[str, str],
) -> None:
    action = _route(files, "checkout")["route"]
    policy = action["retry_policy"]
    assert set(policy["retry_on"].split(",")) == {
        "unavailable", "resource-exhausted", "refused-stream", "cancelled",
        "deadline-exceeded", "internal",
    }  # fmt: skip
    regex = "(?i)application/grpc([+;].*)?"
    grpc_type = {"name": "content-type", "string_match": {"safe_regex": {"regex": regex}}}
    assert grpc_type in policy["retriable_request_headers"]  # idempotent_only: not for gRPC
    assert action["max_stream_duration"] == {"grpc_timeout_header_max": "3s"}
    assert "max_stream_duration" not in _route(files, "web")["route"]
    limit = _route(files, "checkout")["typed_per_filter_config"][
        "envoy.filters.http.local_ratelimit"
    ]
    assert limit["rate_limited_as_resource_exhausted"] is True


def test_envoy_gaps_say_what_a_grpc_caller_gets_differently(files: dict[str, str]) -> None:
    gaps = files["envoy/GAPS.txt"]
    assert "service 'checkout' protocol: Envoy answers a gRPC request it timed out" in gaps
    assert "health_check.grpc" not in gaps  # expressed: grpc_health_check


def test_haproxy_accepts_the_config(folder: Path, files: dict[str, str]) -> None:
    cfg = folder / "haproxy.cfg"
    cfg.write_text(files["haproxy/haproxy.cfg"])
    proc = subprocess.run(
        [require_binary("haproxy"), "-dW", "-c", "-f", str(cfg)],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_envoy_accepts_the_config(folder: Path, files: dict[str, str]) -> None:
    path = folder / "envoy.json"
    path.write_text(files["envoy/envoy.json"])
    assert_envoy_accepts(path, folder)


ACCESS = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  pay: {protocol: grpc, discovery: {static: [{address: 127.0.0.1:9001}]}}
  pay-v2: {protocol: grpc, discovery: {static: [{address: 127.0.0.1:9002}]}}
routes:
  - name: pay
    match: {host: pay}
    to: [{service: pay, weight: 90}, {service: pay-v2, weight: 10}]
access:
  - {from: "*", to: pay, paths: [/shop.Pay/]}
  - {from: "*", to: pay-v2, paths: [/shop.Pay/]}
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls: {cert: c.pem, key: k.pem, ca: ca.pem, client_certificates: required}
"""


def test_haproxy_denies_grpc_callers_with_permission_denied_on_every_alternative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A split's deny condition is an `||` of one term per destination: `mg.grpc` must hold
    in each, or a plain caller denied by the second term would get a gRPC answer."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf = ca.issue_cert("edge.mesh.test")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "c.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    (tmp_path / "k.pem").chmod(0o600)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mesh.yaml").write_text(ACCESS)
    built = pipeline.compile_spec(tmp_path / "mesh.yaml")
    assert built.files is not None, [d.message for d in built.diagnostics]
    edge = _section(built.files["haproxy/haproxy.cfg"], "frontend edge")
    grpc_deny = next(ln for ln in edge if "grpc-status 7" in ln)
    terms = grpc_deny.split(" if ", 1)[1].split(" || ")
    assert len(terms) == 2 and all(t.startswith("mg.grpc pay.matched !{") for t in terms)
    plain = edge.index(grpc_deny) + 1
    assert edge[plain].startswith("http-request deny deny_status 403")
    assert edge[0].startswith("bind ") and edge[0].endswith(" alpn h2,http/1.1")
