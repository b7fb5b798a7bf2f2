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

__all__ = ["config", "connection", "errors", "events", "exceptions", "pending_frame", "settings"]


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
