"""The code stays lint-, format- and type-clean: ruff and mypy --strict run in the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint_is_clean() -> None:
    """`ruff check` reports nothing for the whole repository."""
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    """Every Python file is laid out as `ruff format` writes it (no style churn in diffs)."""
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """`mypy` (strict, configured in pyproject.toml) passes on the meshgen package."""
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
