"""Envoy target for tcp listeners and services: ``tcp_proxy``, ``tls_inspector`` chains, the
network ``rbac`` filter, health ports, and ``envoy --mode validate`` on the result (that Envoy
forwards as the runtime does is tests/e2e/test_parity_tcp.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_envoy_accepts

from meshgen import pipeline
from tests.unit.tcp_mesh import write_mesh

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mesh(tmp_path_factory.mktemp("envoy-tcp"))


@pytest.fixture(scope="module")
def built(folder: Path) -> dict[str, str]:
    result = pipeline.compile_spec(folder / "mesh.yaml")
    assert result.files is not None, [d.message for d in result.diagnostics]
    return result.files


def _listener(files: dict[str, str], name: str) -> dict[str, Any]:
    config = json.loads(files["envoy/envoy.json"])
    found: dict[str, Any] = next(
        x for x in config["static_resources"]["listeners"] if x["name"] == name
    )
    return found


def _proxy(chain: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = chain["filters"][-1]["typed_config"]
    assert config["@type"] == TCP_PROXY
    return config


def test_weighted_tcp_proxy(built: dict[str, str]) -> None:
    (chain,) = _listener(built, "db")["filter_chains"]
    proxy = _proxy(chain)
    assert proxy["weighted_clusters"] == {
        "clusters": [{"name": "db_failover", "weight": 90}, {"name": "db-dr", "weight": 10}]
    }
    assert proxy["idle_timeout"] == "3600s"  # db's 30m and db-dr's 1h: the largest (a gap)
    assert proxy["max_connect_attempts"] == 3
    assert proxy["max_downstream_connection_duration"] == "3600s"
    limit = chain["filters"][0]["typed_config"]
    assert limit["max_connections"] == 200


def test_sni_chains_and_the_hello_wait(built: dict[str, str]) -> None:
    listener = _listener(built, "pass")
    assert listener["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    assert listener["listener_filters_timeout"] == "5s"
    chains = [
        (c["filter_chain_match"]["server_names"], _proxy(c)["cluster"])
        for c in listener["filter_chains"]
    ]
    assert chains == [
        (["api.example.com"], "api"),
        (["*.internal.test"], "api"),
        (["*.test"], "internal"),
    ]
    assert all("transport_socket" not in c for c in listener["filter_chains"])  # passthrough


def test_identity_rules_as_network_rbac(built: dict[str, str]) -> None:
    (chain,) = _listener(built, "secure")["filter_chains"]
    rbac = chain["filters"][1]["typed_config"]
    assert rbac["rules"]["policies"]["callers"]["principals"] == [
        {"authenticated": {"principal_name": {"prefix": "spiffe://shop/"}}}
    ]
    assert chain["transport_socket"]["name"] == "envoy.transport_sockets.tls"


def test_health_port_and_tcp_clusters(built: dict[str, str]) -> None:
    config = json.loads(built["envoy/envoy.json"])
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters["db"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["health_check_config"] == {"port_value": 8008}
    assert clusters["db"]["health_checks"][0]["http_health_check"]["path"] == "/ready"
    assert "retry_budget" not in clusters["db"]["circuit_breakers"]["thresholds"][0]
    gaps = built["envoy/GAPS.txt"]
    assert "listener 'db' to: one tcp_proxy has one idle_timeout" in gaps
    assert "service 'web' health_check.grpc:" in gaps
    assert "listener 'pass' limits.max_connections:" in gaps


def test_envoy_accepts_the_tcp_config(folder: Path, built: dict[str, str]) -> None:
    path = folder / "envoy.json"
    path.write_text(built["envoy/envoy.json"])
    assert_envoy_accepts(path, folder)
