"""The one wait helper of the tests (tests/polling.py): returns early, explains a timeout."""

from __future__ import annotations

import asyncio
import time

import pytest
from polling import eventually, eventually_async


def test_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, [], "ready"])
    assert eventually(lambda: next(calls), interval=0.001) == "ready"


def test_a_failing_assert_means_not_yet() -> None:
    seen: list[int] = []

    def check() -> bool:
        seen.append(1)
        assert len(seen) >= 3, f"only {len(seen)}"
        return True

    assert eventually(check, interval=0.001) is True and len(seen) == 3


def test_a_timeout_names_what_was_awaited_the_last_sight_and_the_context() -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError) as info:
        eventually(lambda: 0, timeout=0.05, what="the ready file", context=lambda: "log tail")
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert "the ready file" in message and "last value: 0" in message and "log tail" in message


def test_any_other_exception_ends_the_wait_at_once() -> None:
    def check() -> bool:
        raise RuntimeError("the process died")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="died"):
        eventually(check, timeout=10)
    assert time.monotonic() - start < 1


def test_the_async_variant_lets_the_loop_run_between_checks() -> None:
    async def main() -> int:
        box: list[int] = []
        asyncio.get_running_loop().call_later(0.02, box.append, 7)
        return await eventually_async(lambda: box and box[0], timeout=2, interval=0.005)

    assert asyncio.run(main()) == 7
