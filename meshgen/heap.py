"""Keep the memory a build frees for the build's own next allocations (glibc only).

A build at 10,000 services makes and drops dozens of large buffers (a big file's pieces, its
joined text, its bytes): glibc serves every block over its mmap threshold (at most 32 MiB)
with a mapping of its own and unmaps it on free, and trims free memory at the top of the heap,
so the pages of each next buffer are faulted in afresh (~60,000 page faults, 0.2-0.5 s of
system time). ``meshgen build`` exits right after writing DIST, so it has no use for handing
memory back early: :func:`keep_freed_memory` has malloc serve large blocks from the heap and
never trim it. Only the command calls it, never an in-process build (a long-lived caller wants
its memory back). Where the C library has no ``mallopt`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tell malloc to keep what is freed for reuse; False where that cannot be said."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
