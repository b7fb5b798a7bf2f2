"""Every example's Envoy config is served by a real Envoy, not only validated: Envoy starts on
the build (clusters warm, ``/ready`` LIVE), binds every listener, and each plain HTTP listener
answers a request for a host no route names: 404, or 503 where a host-less route takes it
(its endpoints are not running). The examples' fixed listener and admin ports become free
ones (port 0); their endpoints are not started, so this is about Envoy taking the config, not
about the example's traffic (test_parity*.py and test_example_grpc.py do that).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest
from envoy_harness import run_envoy
from haproxy_harness import Engine, build

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/mesh.yaml"))
HCM = "envoy.filters.network.http_connection_manager"


def plain_http(listener: dict[str, object]) -> bool:
    """An HTTP connection manager without TLS on every filter chain."""
    chains = listener["filter_chains"]
    assert isinstance(chains, list)
    return all(
        "transport_socket" not in c and any(f["name"] == HCM for f in c["filters"]) for c in chains
    )


@pytest.mark.parametrize("example", EXAMPLES)
def test_envoy_serves_the_example(example: str, tmp_path: Path) -> None:
    folder = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, folder, ignore=shutil.ignore_patterns("dist"))
    text = (folder / "mesh.yaml").read_text()
    text = re.sub(r"(address: |admin: )127\.0\.0\.1:1[56]\d{3}", r"\g<1>127.0.0.1:0", text)
    dist = build(text, folder)
    listeners = json.loads((dist / "envoy" / "envoy.json").read_text())["static_resources"][
        "listeners"
    ]
    assert listeners
    with run_envoy(dist, listener=listeners[0]["name"]) as envoy:
        bound = json.loads(envoy.admin("/listeners?format=json"))["listener_statuses"]
        ports = {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in bound}
        assert set(ports) == {lst["name"] for lst in listeners}
        for lst in listeners:
            port = int(ports[lst["name"]])
            assert port != 0
            if plain_http(lst):
                status, _, _ = Engine("envoy", port).request("/", "no-such-host.test")
                assert status in (404, 503), (lst["name"], status)
            else:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
