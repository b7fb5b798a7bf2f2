"""The three engines a DIST runs on, behind one switch: the embedded runtime, HAProxy, Envoy.

:func:`run_engine` starts ``name`` on a built DIST; ``nameserver`` (HOST:PORT) points its DNS
discovery at a test DNS server (the runtime's ``--dns-server``; a ``nameserver`` line for
HAProxy; a c-ares resolver for Envoy). Parity tests parametrize over :data:`ENGINES`, so a
difference between engines shows as one failing parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from envoy_harness import run_envoy
from haproxy_harness import Engine, build, run_haproxy, run_runtime
from runtime_harness import HOSTILE, script_backend, spec

ENGINES = ("runtime", "haproxy", "envoy")


@contextmanager
def run_engine(
    name: str, dist: Path, nameserver: str | None = None, listener: str = "edge"
) -> Iterator[Engine]:
    if name == "runtime":
        args = ("--dns-server", nameserver) if nameserver else ()
        with run_runtime(dist, *args, listener=listener) as engine:
            yield engine
    elif name == "haproxy":
        with run_haproxy(dist, listener=listener, nameserver=nameserver) as engine:
            yield engine
    elif name == "envoy":
        with run_envoy(dist, listener=listener, nameserver=nameserver) as engine:
            yield engine
    else:
        raise ValueError(f"unknown engine {name!r}")


@contextmanager
def hostile_engine(name: str, folder: Path, backend: str = HOSTILE) -> Iterator[Engine]:
    """``name`` in front of ``hostile_backend.py`` (or the ``script_backend`` source
    ``backend``): service and host ``hostile``, defaults."""
    with script_backend(backend) as (address, _):
        route = f"""
            services:
              hostile: {{discovery: {{static: [{{address: "{address}"}}]}}}}
            routes:
              - {{name: hostile, match: {{host: hostile}}, to: [{{service: hostile}}]}}
            """
        with run_engine(name, build(spec(route), folder / "mesh")) as engine:
            yield engine
