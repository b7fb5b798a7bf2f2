"""Where the proxy's modules find the upstream head builder until they move under ``forward/``."""

from __future__ import annotations

from .forward.heads import NO_OPS, REQUEST_SKIP, VIA_LINE, CompiledOps, request_head

__all__ = ["NO_OPS", "REQUEST_SKIP", "VIA_LINE", "CompiledOps", "request_head"]
