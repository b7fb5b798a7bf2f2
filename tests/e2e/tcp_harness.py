"""Helpers for the tcp listener tests: echo servers, specs with tcp listeners, raw clients."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

from runtime_harness import Runtime, script_backend

ECHO = Path(__file__).with_name("tcp_echo.py").read_text()


def echo(name: str) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    """A tcp_echo.py server named ``name``: yields (address, process), killed by PID after."""
    return script_backend(ECHO, name)


@contextlib.contextmanager
def echoes(*names: str) -> Iterator[dict[str, str]]:
    """Several echo servers: name -> address."""
    with contextlib.ExitStack() as stack:
        yield {n: stack.enter_context(echo(n))[0] for n in names}


def tcp_spec(services: str, listeners: str, extra: str = "") -> str:
    """A mesh with the ``edge`` listener, the admin server on port 0, ``services`` and the tcp
    ``listeners`` (YAML list items), each block dedented."""
    return (
        "version: 1\nmesh: {name: shop, domain: mesh.test}\nadmin: '127.0.0.1:0'\nservices:\n"
        + textwrap.indent(textwrap.dedent(services), "  ")
        + "listeners:\n  - {name: edge, address: '127.0.0.1:0'}\n"
        + textwrap.indent(textwrap.dedent(listeners), "  ")
        + textwrap.dedent(extra)
    )


def static(*addresses: str) -> str:
    return "{static: [" + ", ".join(f"{{address: '{a}'}}" for a in addresses) + "]}"


def address(rt: Runtime, listener: str) -> tuple[str, int]:
    host, port = str(rt.ready["listeners"][listener]).rsplit(":", 1)  # type: ignore[index]
    return host, int(port)


def connect(rt: Runtime, listener: str, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(address(rt, listener), timeout=timeout)


def line(sock: socket.socket) -> bytes:
    """One ``\\n``-terminated line (the echo server's greeting or ``bye N``), byte by byte."""
    out = b""
    while not out.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {out!r}")
        out += chunk
    return out


def exact(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(min(65536, size - len(out)))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {size} bytes")
        out += chunk
    return bytes(out)


def closed(sock: socket.socket) -> bool:
    """Whether the peer closed (EOF or reset) within the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
