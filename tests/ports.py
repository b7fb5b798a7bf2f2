"""Ports for tests, bound once and kept: never a "free right now" guess another process can take.

A server under test binds port 0 itself and reports what it got (the runtime's ``--ready-file``,
a backend printing its port); a port that must *refuse* connections (a dead endpoint) is a
socket bound here and never listening, held until the test ends, so nothing else can start
listening there meanwhile.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are refused while the block runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: a connect gets RST (refused)
        yield int(s.getsockname()[1])
