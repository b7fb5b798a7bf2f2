"""The embedded runtime, copied verbatim into ``DIST/meshgen_runtime``.

``from meshgen_runtime import Mesh, MeshError, Response`` is the proxyless client (it lives in
``app/client.py``); it is imported lazily so that the compiler can use :mod:`.tables` without
loading the proxy. Before any submodule loads, :func:`.compiled.select` decides whether they
come from this copy's compiled (mypyc) build: :data:`SELECTED`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .compiled import required_but_missing, select

if TYPE_CHECKING:
    from .app.client import Mesh, MeshError, Response

__all__ = ["Mesh", "MeshError", "Response"]

SELECTED = select(__path__, __name__)
"""Which runtime this package runs (``compiled.describe(SELECTED)`` says it in words)."""


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .app import client

        problem = required_but_missing(SELECTED)
        if problem:
            raise ImportError(problem)
        return getattr(client, name)
    raise AttributeError(name)
