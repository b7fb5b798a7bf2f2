"""HAProxy target for tcp listeners and services: ``mode tcp`` frontends and backends.

What the config says is asserted line by line here; that HAProxy accepts it (``haproxy -dW
-c``) and forwards the same way as the runtime is the parity suite's job (tests/e2e).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trustme
from conftest import require_binary

from meshgen import pipeline
from meshgen.targets import haproxy, make_context

SPEC = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  web:
    discovery: {static: [{address: 127.0.0.1:9001}]}
    health_check: {grpc: {}, port: 9901}
  db:
    protocol: tcp
    discovery: {static: [{address: 127.0.0.1:5432}, {address: 127.0.0.1:5433}]}
    load_balancer: {policy: maglev, hash_on: {source_ip: true}}
    health_check: {http: {path: /ready}, port: 8008}
    outlier_detection: {consecutive_5xx: 3}
    circuit_breaker: {max_connections: 100}
    retries: {attempts: 2}
    idle_timeout: 30m
    failover: {backup: db-dr}
  db-dr:
    protocol: tcp
    discovery: {static: [{address: 127.0.0.1:6432}]}
  api:
    protocol: tcp
    discovery: {static: [{address: 127.0.0.1:8443}]}
  internal:
    protocol: tcp
    discovery: {static: [{address: 127.0.0.1:9443}]}
listeners:
  - {name: edge, address: 127.0.0.1:15001}
  - name: db
    address: 127.0.0.1:15432
    protocol: tcp
    to: [{service: db, weight: 90}, {service: db-dr, weight: 10}]
    limits: {max_connections: 200, max_connection_duration: 1h}
  - name: pass
    address: 127.0.0.1:15443
    protocol: tcp
    sni: {"*.test": internal, api.example.com: api, "*.internal.test": api}
  - name: secure
    address: 127.0.0.1:15433
    protocol: tcp
    to: [{service: db-dr}]
    tls: {cert: certs/edge.pem, key: certs/edge.pem, ca: certs/ca.pem,
          client_certificates: required}
access:
  - {from: "*", to: db-dr}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mesh.yaml with real certificates beside it (HAProxy loads them when checking)."""
    root = tmp_path_factory.mktemp("tcp")
    ca = trustme.CA()
    (root / "certs").mkdir()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "certs" / "edge.pem")
    )
    ca.cert_pem.write_to_path(str(root / "certs" / "ca.pem"))
    (root / "mesh.yaml").write_text(SPEC)
    return root


@pytest.fixture(scope="module")
def text(folder: Path) -> str:
    result = pipeline.compile_spec(folder / "mesh.yaml", version="9.9")
    assert result.tables is not None, [d.message for d in result.diagnostics]
    return haproxy.render(result.tables, make_context("mesh.yaml", "9.9"))["haproxy/haproxy.cfg"]


def _section(text: str, head: str) -> list[str]:
    body = text.split(f"\n{head}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in body.splitlines()]


def test_weighted_tcp_frontend_with_failover_chain(text: str) -> None:
    """One rand(100) per connection; each target walks its service's failover chain."""
    lines = _section(text, "frontend db")
    assert lines[:4] == ["mode tcp", "bind 127.0.0.1:15432", "maxconn 200", "timeout client 3600s"]
    assert "tcp-request content set-var(sess.mg_pick) rand(100)" in lines
    uses = [line for line in lines if line.startswith("use_backend")]
    assert uses == [
        "use_backend db if { var(sess.mg_pick) -m int lt 90 } { nbsrv(db) gt 0 }",
        "use_backend db-dr if { var(sess.mg_pick) -m int lt 90 } { nbsrv(db-dr) gt 0 }",
        "use_backend db if { var(sess.mg_pick) -m int lt 90 }",
        "use_backend db-dr if { var(sess.mg_pick) -m int ge 90 }",
    ]
    assert any("max_connection_duration" in line for line in lines)


def test_sni_frontend_waits_for_the_hello_and_follows_precedence(text: str) -> None:
    """Exact names first, then the longest wildcard; anything else is rejected."""
    lines = _section(text, "frontend pass")
    assert "tcp-request inspect-delay 5s" in lines
    acls = [line for line in lines if line.startswith("acl mg.sni")]
    assert acls == [
        "acl mg.sni0 req.ssl_sni,lower -m str api.example.com",
        "acl mg.sni1 req.ssl_sni,lower -m end .internal.test",
        "acl mg.sni2 req.ssl_sni,lower -m end .test",
    ]
    accept = lines.index(
        "tcp-request content accept if mg.hello mg.sni0 || mg.hello mg.sni1 || mg.hello mg.sni2"
    )
    assert lines[accept + 2] == "tcp-request content reject"
    uses = [line for line in lines if line.startswith("use_backend")]
    assert uses == [
        "use_backend api if mg.sni0",
        "use_backend api if mg.sni1",
        "use_backend internal if mg.sni2",
    ]


def test_tls_terminating_frontend_admits_any_verified_caller_by_star_rule(text: str) -> None:
    lines = _section(text, "frontend secure")
    assert lines[1].startswith("bind 127.0.0.1:15433 ssl crt certs/edge.pem")
    assert "tcp-request content reject unless { ssl_c_used } { ssl_c_verify 0 }" in lines


def test_tcp_backend_connect_attempts_health_port_and_layer4_outliers(text: str) -> None:
    lines = _section(text, "backend db")
    assert lines[1:3] == ["mode tcp", "balance source"]
    assert "hash-type consistent" in lines
    assert lines[4:7] == ["timeout connect 5s", "timeout server 1800s", "timeout tunnel 1800s"]
    assert "retries 2" in lines and "option redispatch 1" in lines
    assert not any(line.startswith("retry-on") for line in lines)
    assert "option httpchk GET /ready" in lines
    servers = [line for line in lines if line.startswith("server ")]
    assert servers == [
        f"server 127.0.0.1:{p} 127.0.0.1:{p} weight 1 maxconn 50 check port 8008 observe "
        "layer4 error-limit 3 on-error mark-down"
        for p in (5432, 5433)
    ]


def test_http_frontends_ignore_tcp_idle_timeouts_and_grpc_checks_connect(text: str) -> None:
    assert "timeout client 60s" in _section(text, "frontend edge")
    web = _section(text, "backend web")
    assert any("no gRPC check" in line for line in web)
    assert web[-1].endswith("maxqueue 1024 check port 9901")


def test_haproxy_accepts_the_tcp_config(folder: Path, text: str) -> None:
    cfg = folder / "haproxy.cfg"
    cfg.write_text(text)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.run(
        [require_binary("haproxy"), "-dW", "-c", "-f", str(cfg)],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
