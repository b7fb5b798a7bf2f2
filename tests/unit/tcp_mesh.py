"""A mesh with every kind of tcp listener and service, for the target tests (HAProxy, Envoy)."""

from __future__ import annotations

from pathlib import Path

import trustme

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


def write_mesh(root: Path) -> Path:
    """mesh.yaml with real certificates beside it (the engines load them when checking)."""
    ca = trustme.CA()
    (root / "certs").mkdir()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "certs" / "edge.pem")
    )
    ca.cert_pem.write_to_path(str(root / "certs" / "ca.pem"))
    (root / "mesh.yaml").write_text(SPEC)
    return root
