"""examples/tcp runs end to end exactly as its README says.

The README's first ``sh`` block is the setup: its ``meshgen ...`` lines run as this checkout's
meshgen, its background lines (``... &``: Redis, two ``openssl s_server``, ``python dist``) are
started as processes. Every fixed port of the example is replaced by a free one, in a copy of
mesh.yaml and in the commands alike. The second block is run line by line in bash (its
function definitions first), and each line's output must be what its comment says.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from polling import eventually

from tests.conftest import Process, free_port, require_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tcp"
README = EXAMPLE / "README.md"
PORTS = ("6390", "8443", "9443", "16379", "15443", "15000")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def _lines(block: str) -> list[str]:
    return [ln.split(" #")[0].strip() for ln in block.splitlines() if ln and ln[0] != "#"]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_readme_steps(tmp_path: Path, processes: Callable[..., Process]) -> None:
    for binary in ("redis-server", "redis-cli", "openssl", "curl"):
        require_binary(binary)
    work = tmp_path / "tcp"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("dist", "certs"))
    ports = {p: str(free_port()) for p in PORTS}

    def local(text: str) -> str:
        return re.sub(r"\b(" + "|".join(PORTS) + r")\b", lambda m: ports[m.group(1)], text)

    (work / "mesh.yaml").write_text(local((work / "mesh.yaml").read_text()))
    setup, calls = _blocks()
    started = []
    for line in _lines(local(setup)):
        if line.startswith("meshgen "):
            argv = [sys.executable, "-m", *shlex.split(line)]
            proc = subprocess.run(argv, cwd=work, env=ENV, capture_output=True, text=True)
            assert proc.returncode == 0, f"{line}:\n{proc.stdout}{proc.stderr}"
        else:
            assert line.endswith("&"), line
            command = line.removesuffix("&").strip()
            if command.startswith("python "):
                command = shlex.join([sys.executable, *shlex.split(command)[1:]])
            started.append(processes(["bash", "-c", f"exec {command}"], cwd=work, env=ENV))
    assert len(started) == 4
    for port in ports.values():
        eventually(lambda port=port: _accepts(int(port)), what=f"port {port}", timeout=20,
                   context=lambda: "\n".join(p.log_tail() for p in started))  # fmt: skip

    block = local(calls).splitlines()
    prelude = "\n".join(ln for ln in block if re.match(r"^\w+\(\) \{", ln))
    checked = 0
    for line in block:
        if not line or "() {" in line:
            continue
        command, _, expected = line.partition(" # ")
        proc = subprocess.run(["bash", "-c", f"{prelude}\n{command}"], cwd=work, env=ENV,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert proc.stdout.strip() == expected.strip(), f"{command}:\n{proc.stdout}{proc.stderr}"
        checked += 1
    assert checked == 9
