"""Run an example's README end to end: its setup block, then its calls, each output checked.

The README's first ``sh`` block is the setup: its ``meshgen ...`` lines run as this checkout's
meshgen, its background lines (``... &``) are started as processes (``python`` as this
Python), other lines run in bash and must succeed. ``replace`` swaps a setup line for others
(the README's alternative steps, e.g. another proxy). Every fixed port of the example is
replaced by a free one, in a copy of mesh.yaml and in the commands alike. The second block is
run line by line in bash (its function definitions first), and each line's output must be what
its comment (`` # ``) says (``python`` is this Python there too); the first line is retried for
a while (the servers' first health checks may still be under way) unless ``retry_first`` is
off.
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

from polling import eventually

from tests.conftest import Process, free_port

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _blocks(readme: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", readme.read_text(encoding="utf-8"), re.M | re.S)


def _lines(block: str) -> list[str]:
    return [ln.split(" #")[0].strip() for ln in block.splitlines() if ln and ln[0] != "#"]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_readme(
    example: str,
    work: Path,
    fixed_ports: tuple[str, ...],
    processes: Callable[..., Process],
    started_count: int,
    checked_count: int,
    replace: dict[str, list[str]] | None = None,
    retry_first: bool = True,
) -> None:
    """Copy ``examples/<example>`` to ``work``, run its README's setup and check its calls."""
    source = REPO / "examples" / example
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("dist", "certs", "__pycache__"))
    ports = {p: str(free_port()) for p in fixed_ports}

    def local(text: str) -> str:
        return re.sub(r"\b(" + "|".join(fixed_ports) + r")\b", lambda m: ports[m.group(1)], text)

    (work / "mesh.yaml").write_text(local((work / "mesh.yaml").read_text()))
    setup, calls = _blocks(source / "README.md")
    started = []
    steps = [new for line in _lines(setup) for new in (replace or {}).get(line, [line])]
    for line in _lines(local("\n".join(steps))):
        if line.startswith("meshgen "):
            argv = [sys.executable, "-m", *shlex.split(line)]
            proc = subprocess.run(argv, cwd=work, env=ENV, capture_output=True, text=True)
            assert proc.returncode == 0, f"{line}:\n{proc.stdout}{proc.stderr}"
        elif not line.endswith("&"):
            command = line.replace("python ", shlex.quote(sys.executable) + " ")
            proc = subprocess.run(["bash", "-c", command], cwd=work, env=ENV,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert proc.returncode == 0, f"{line}:\n{proc.stdout}{proc.stderr}"
        else:
            command = line.removesuffix("&").strip()
            if command.startswith("python "):
                command = shlex.join([sys.executable, *shlex.split(command)[1:]])
            started.append(processes(["bash", "-c", f"exec {command}"], cwd=work, env=ENV))
    assert len(started) == started_count
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
        if command.startswith("python "):
            command = shlex.quote(sys.executable) + command.removeprefix("python")

        def run(command: str = command) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["bash", "-c", f"{prelude}\n{command}"], cwd=work, env=ENV,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip

        want = expected.strip()
        if checked == 0 and retry_first:
            eventually(lambda run=run, want=want: run().stdout.strip() == want, what=command,
                       timeout=20, context=lambda run=run: run().stderr[-2000:])  # fmt: skip
        proc = run()
        assert proc.stdout.strip() == want, f"{command}:\n{proc.stdout}{proc.stderr}"
        checked += 1
    assert checked == checked_count
