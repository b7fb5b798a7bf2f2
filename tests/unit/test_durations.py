"""Durations: exactly the documented syntax, and a round trip for messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("30d", 2592000.0), ("0s", 0.0)],
)
def test_parse_accepts_spec_units(text: str, seconds: float) -> None:
    """Each SPEC unit converts to seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", 5, "1.5s", "5 s", "-1s", "5sec", "", "1w", None, "s"])
def test_parse_rejects_everything_else(text: object) -> None:
    """Bare numbers, fractions, spaces, signs and unknown units are errors."""
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "250ms"), (3600.0, "1h"), (90.0, "90s"), (86400 * 7, "7d")]
)
def test_format_picks_the_largest_exact_unit(seconds: float, text: str) -> None:
    """Messages show durations the way a user would write them."""
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_format_round_trips(number: int, unit: str) -> None:
    """format_duration(parse_duration(x)) denotes the same duration."""
    seconds = parse_duration(f"{number}{unit}")
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
