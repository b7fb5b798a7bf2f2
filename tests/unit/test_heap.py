"""heap: the build command keeps what it frees for its own next allocations (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FREE_A_BIG_BUFFER = """
import sys
from meshgen.heap import keep_freed_memory

def resident_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024

kept = sys.argv[1] == "keep" and keep_freed_memory()
before = resident_mib()
big = b"x" * (64 << 20)  # every page written
del big
print(kept, resident_mib() - before)
"""


def _freed(mode: str) -> tuple[str, int]:
    argv = [sys.executable, "-c", FREE_A_BIG_BUFFER, mode]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT, timeout=60)
    kept, grown = out.stdout.split()
    return kept, int(grown)


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not Path("/proc/self/status").exists(),
    reason="mallopt and /proc are glibc/Linux features",
)
def test_a_freed_64_mib_buffer_stays_in_the_heap_only_when_asked() -> None:
    kept, grown = _freed("default")
    assert kept == "False" and grown < 8  # glibc unmapped it
    kept, grown = _freed("keep")
    assert kept == "True" and grown >= 56
