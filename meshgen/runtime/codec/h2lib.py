"""The HTTP/2 library: ``jh2`` when it is installed (the same API as ``h2``, compiled), else
``h2``. Every HTTP/2 module of the runtime imports the library from here, so the choice is
made once; type checking always sees ``h2`` (``jh2`` ships the same names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyperframe.frame import Frame

if TYPE_CHECKING:
    from h2 import config, connection, errors, events, exceptions, settings
else:
    try:
        from jh2 import config, connection, errors, events, exceptions, settings
    except ImportError:
        from h2 import config, connection, errors, events, exceptions, settings

__all__ = [
    "config",
    "connection",
    "errors",
    "events",
    "exceptions",
    "finish_after_goaway",
    "pending_frame",
    "settings",
]


def pending_frame(h2: connection.H2Connection) -> int:
    """The announced length of the frame ``h2`` is still waiting for (0: none): ``h2``
    checks a frame's length only once all of it is in, up to 16 MiB later. Its buffer's name
    differs between versions: ``_data`` since h2 4.2, ``data`` before and in jh2."""
    buf = h2.incoming_buffer
    data: Any = getattr(buf, "_data", None)
    if data is None:
        data = getattr(buf, "data", b"")
    if len(data) < 9:
        return 0
    return int(Frame.parse_frame_header(memoryview(bytes(data[:9])))[1])


def finish_after_goaway(h2: connection.H2Connection) -> bool:
    """Let a client connection go on receiving after the server's GOAWAY, so the streams the
    server still processes (ids up to its last one) can finish, as RFC 9113 section 6.8 says
    they may; ``h2`` ends the connection's state at GOAWAY and refuses every later frame.
    Only ``H2Client`` calls it, and it opens no stream after a GOAWAY. False when this ``h2``
    has no such state table (those streams then fail as ``reset``)."""
    machine = getattr(h2, "state_machine", None)
    table = getattr(machine, "_transitions", None)
    if machine is None or not isinstance(table, dict):
        return False
    states = connection.ConnectionState
    inputs = connection.ConnectionInputs
    key = (states.CLIENT_OPEN, inputs.RECV_GOAWAY)
    if key not in table:
        return False
    own = dict(table)
    own[key] = (None, states.CLIENT_OPEN)
    machine._transitions = own
    return True
