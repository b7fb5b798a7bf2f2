"""The three engines a DIST runs on, behind one switch: the embedded runtime, HAProxy, Envoy.

:func:`run_engine` starts ``name`` on a built DIST; ``nameserver`` (HOST:PORT) points its DNS
discovery at a test DNS server (the runtime's ``--dns-server``; a ``nameserver`` line for
HAProxy; a c-ares resolver for Envoy). Parity tests parametrize over :data:`ENGINES`, so a
difference between engines shows as one failing parameter.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import require_binary
from envoy_harness import run_envoy
from haproxy_harness import Engine, build, run_haproxy, run_runtime
from runtime_harness import HOSTILE, memory, script_backend, spec

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


def serving_pids(port: int) -> list[int]:
    """The processes listening on ``port`` but this one (the harness binds HAProxy's ports and
    hands them over, so it listens too)."""
    ss = require_binary("ss")
    out = subprocess.run([ss, "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out.stdout)} - {os.getpid()})


def cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user + system) ``pids`` have spent so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def resident(pids: list[int]) -> int:
    """The resident memory (``VmRSS``) of ``pids`` together, in bytes."""
    return sum(memory(pid) for pid in pids)
