"""Durations as written in mesh.yaml (``250ms``, ``5s``, ``2m``, ``1h``, ``30d``) <-> seconds.

One parser shared by the compiler stages and the alert-expression parser, so every place that
accepts a duration accepts exactly the documented syntax: digits then one unit, no bare numbers.
"""

from __future__ import annotations

import re
from typing import Final

DURATION_RE: Final = re.compile(r"([0-9]+)(ms|s|m|h|d)")
UNIT_SECONDS: Final[dict[str, int]] = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class DurationError(ValueError):
    """The text is not a valid duration; the message says what was expected."""


def parse_duration(text: object) -> float:
    """Return the duration in seconds; raise :class:`DurationError` for anything else."""
    if not isinstance(text, str):
        raise DurationError(f"{text!r} is not a duration; write it like '5s' or '250ms'")
    found = DURATION_RE.fullmatch(text)
    if found is None:
        raise DurationError(
            f"'{text}' is not a duration; use digits and a unit (ms, s, m, h, d) like '5s'"
        )
    number, unit = int(found.group(1)), found.group(2)
    if unit == "ms":
        return number / 1000
    return float(number * UNIT_SECONDS[unit])


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` (``3600.0`` -> ``1h``), for messages."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    for unit, size in UNIT_SECONDS.items():
        if whole % size == 0 and whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"
