"""The embedded runtime, copied verbatim into ``DIST/meshgen_runtime``.

``from meshgen_runtime import Mesh`` is the proxyless client; it is imported lazily so that the
compiler can use :mod:`.tables` without loading the proxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Mesh

__all__ = ["Mesh"]


def __getattr__(name: str) -> Any:
    if name == "Mesh":
        from .client import Mesh

        return Mesh
    raise AttributeError(name)
