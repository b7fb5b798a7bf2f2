"""A real Redis (Debian ``redis-server``) behind a tcp listener of `python DIST`.

``redis-cli`` talks to Redis through the sidecar: a round trip, a pipeline of 10,000 commands
(``--pipe``: all written before the replies are read, so both directions are in flight at
once) and an 8 MiB value written and read back.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Process, free_port, require_binary
from runtime_harness import Runtime, build_dist, run_dist
from tcp_harness import address, static, tcp_spec
from test_proxy_semantics import count

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
def redis(processes: object) -> Iterator[str]:
    """redis-server on 127.0.0.1 (it needs a port number; a taken one is retried)."""
    server = require_binary("redis-server")
    for _ in range(3):
        port = free_port()
        argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--protected-mode", "no"]  # fmt: skip
        proc: Process = processes(argv, name="redis")  # type: ignore[operator]

        def ready(proc: Process = proc) -> bool:
            if "Ready to accept connections" in proc.log.read_text(errors="replace"):
                return True
            if proc.popen.poll() is not None:
                raise AssertionError("redis-server exited")
            return False

        try:
            proc.wait_until(ready, what="redis-server")
        except (AssertionError, pytest.fail.Exception):
            if "Address already in use" in proc.log.read_text(errors="replace"):
                continue
            raise
        yield f"127.0.0.1:{port}"
        return
    pytest.fail("redis-server found no free port")


@pytest.fixture
def runtime(redis: str, tmp_path: Path) -> Iterator[Runtime]:
    text = tcp_spec(
        f"redis: {{protocol: tcp, discovery: {static(redis)}}}\n",
        "  - {name: cache, address: '127.0.0.1:0', protocol: tcp, to: [{service: redis}]}\n",
    )
    with run_dist(build_dist(tmp_path / "dist", text)) as rt:
        yield rt


def cli(rt: Runtime, *args: str, stdin: bytes = b"") -> str:
    host, port = address(rt, "cache")
    proc = subprocess.run(
        [require_binary("redis-cli"), "-h", host, "-p", str(port), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.decode()


def test_redis_cli_round_trip(runtime: Runtime) -> None:
    assert cli(runtime, "PING") == "PONG\n"
    assert cli(runtime, "SET", "greeting", "hello through the mesh") == "OK\n"
    assert cli(runtime, "GET", "greeting") == "hello through the mesh\n"
    assert count(runtime, "meshgen_tcp_connections_total", listener="cache") == 3


def test_redis_pipeline_through_the_sidecar(runtime: Runtime) -> None:
    commands = b"".join(b"INCR counter\r\nRPUSH list %d\r\n" % i for i in range(5000))
    out = cli(runtime, "--pipe", stdin=commands)
    assert "errors: 0, replies: 10000" in out
    assert cli(runtime, "GET", "counter") == "5000\n"
    assert cli(runtime, "LLEN", "list") == "5000\n"
    assert cli(runtime, "LINDEX", "list", "4999") == "4999\n"


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def test_a_large_value_goes_both_ways(runtime: Runtime) -> None:
    value = bytes(range(256)) * (8 * 4096)  # 8 MiB
    with socket.create_connection(address(runtime, "cache"), timeout=30) as s:
        s.sendall(_resp(b"SET", b"big", value) + _resp(b"GET", b"big"))
        expected = b"+OK\r\n" + b"$%d\r\n" % len(value) + value + b"\r\n"
        got = b""
        while len(got) < len(expected):
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
    assert got == expected
