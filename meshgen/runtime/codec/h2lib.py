"""The HTTP/2 library: ``jh2`` when it is installed (the same API as ``h2``, compiled), else
``h2``. Every HTTP/2 module of the runtime imports the library from here, so the choice is
made once; type checking always sees ``h2`` (``jh2`` ships the same names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from h2 import config, connection, errors, events, exceptions, settings
else:
    try:
        from jh2 import config, connection, errors, events, exceptions, settings
    except ImportError:
        from h2 import config, connection, errors, events, exceptions, settings

__all__ = ["config", "connection", "errors", "events", "exceptions", "settings"]
