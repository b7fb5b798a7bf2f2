"""HAProxy target for tcp listeners and services: ``mode tcp`` frontends and backends.

What the config says is asserted line by line here; that HAProxy accepts it (``haproxy -dW
-c``) and forwards the same way as the runtime is the parity suite's job (tests/e2e).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import require_binary

from meshgen import pipeline
from meshgen.targets import haproxy, make_context
from tests.unit.tcp_mesh import write_mesh


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mesh(tmp_path_factory.mktemp("tcp"))


@pytest.fixture(scope="module")
def result(folder: Path) -> pipeline.Result:
    built = pipeline.compile_spec(folder / "mesh.yaml", version="9.9")
    assert built.tables is not None and built.files is not None, built.diagnostics
    return built


@pytest.fixture(scope="module")
def text(result: pipeline.Result) -> str:
    assert result.tables is not None
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
    assert _section(text, "backend web")[-1].endswith("maxqueue 1024 check port 9901")


def test_what_haproxy_cannot_express_is_in_gaps(result: pipeline.Result) -> None:
    """A gRPC check (a connect instead) and a connection age limit; tcp retries are connect
    attempts HAProxy does express, so they are no gap."""
    assert result.files is not None
    gaps = result.files["haproxy/GAPS.txt"]
    assert "service 'web' health_check.grpc: HAProxy 2.6 has no gRPC health check" in gaps
    assert "listener 'db' limits.max_connection_duration: HAProxy 2.6 cannot end" in gaps
    assert "service 'db' retries" not in gaps


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
