"""The embedded runtime, copied verbatim into ``DIST/meshgen_runtime``.

``from meshgen_runtime import Mesh, MeshError, Response`` is the proxyless client (it lives in
``app/client.py``); it is imported lazily so that the compiler can use :mod:`.tables` without
loading the proxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app.client import Mesh, MeshError, Response

__all__ = ["Mesh", "MeshError", "Response"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .app import client

        return getattr(client, name)
    raise AttributeError(name)
