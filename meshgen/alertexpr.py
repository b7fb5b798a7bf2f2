"""Alert conditions: ``"SIGNAL OP VALUE"`` -> (signal, operator, threshold in base units).

Shared by the monitoring checks (which report parse errors) and the monitoring targets (which
compile the result to PromQL and to the embedded evaluator), so both read one grammar.

Units per signal (docs/reference.md, Monitoring):
- ``error_rate``, ``healthy_ratio``: a percentage ``N%`` (0..100), threshold = ratio 0..1;
- ``request_rate``: requests per second, ``N`` or ``N/s``;
- ``p50_latency``, ``p90_latency``, ``p99_latency``, ``cert_expiry``: a duration, in seconds;
- ``healthy_endpoints``: a whole count.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal, cast

from meshgen.durations import DurationError, parse_duration
from meshgen.record import Record

if TYPE_CHECKING:
    from meshgen.runtime.tables import Comparison, Signal

SignalUnit = Literal["percent", "rate", "duration", "count"]
SIGNAL_UNITS: Final[dict[str, SignalUnit]] = {
    "error_rate": "percent",
    "request_rate": "rate",
    "p50_latency": "duration",
    "p90_latency": "duration",
    "p99_latency": "duration",
    "healthy_endpoints": "count",
    "healthy_ratio": "percent",
    "cert_expiry": "duration",
}
"""Every runtime :data:`~meshgen.runtime.tables.Signal`, in its order, with its unit
(tests/unit/test_alertexpr.py holds the two to each other; this module does not import the
runtime's tables, which a validate never needs)."""
SIGNALS: Final[tuple[str, ...]] = tuple(SIGNAL_UNITS)
OPERATORS: Final[tuple[str, ...]] = (">=", "<=", ">", "<")
UNIT_EXAMPLES: Final[dict[SignalUnit, str]] = {
    "percent": "a percentage like '5%'",
    "rate": "requests per second like '100' or '100/s'",
    "duration": "a duration like '250ms' or '7d'",
    "count": "a whole number like '2'",
}
_EXPR: Final = r"\s*([A-Za-z0-9_]*)\s*([<>=!]*)\s*(.*?)\s*"
_NUMBER: Final = r"[0-9]+(?:\.[0-9]+)?"
"""Patterns that ``re`` compiles at their first use: a spec without alerts never needs them."""


class AlertExpr(Record):
    """A parsed alert condition: ``signal op threshold``."""

    signal: Signal
    op: Comparison
    threshold: float


class AlertExprError(ValueError):
    """``code`` is E601 (does not parse) or E602 (value does not fit the signal).

    ``part`` is the (start, end) character range of the wrong part of the condition (signal,
    operator or value), for a caret under just that part; empty when the part is missing.
    """

    def __init__(self, code: str, message: str, hint: str | None, part: tuple[int, int]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.part = part


def parse_when(text: str) -> AlertExpr:
    """Parse one condition; raise :class:`AlertExprError` saying what is wrong and what fits."""
    found = re.fullmatch(_EXPR, text)
    assert found is not None  # the pattern matches every string
    signal, op, value = found.groups()
    if signal not in SIGNAL_UNITS:
        import difflib  # imported here: only a spec with a mistake needs it

        close = difflib.get_close_matches(signal, SIGNALS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "signals: " + ", ".join(SIGNALS)
        problem = f"unknown signal '{signal}'" if signal else "no signal at the start"
        raise AlertExprError("E601", f"alert condition '{text}': {problem}", hint, found.span(1))
    if op not in OPERATORS:
        shown = f"'{op}'" if op else "nothing"
        raise AlertExprError(
            "E601",
            f"alert condition '{text}': expected an operator after '{signal}', found {shown}",
            "write SIGNAL OP VALUE with OP one of > >= < <=",
            found.span(2),
        )
    if not value:
        raise AlertExprError(
            "E601", f"alert condition '{text}': no value after '{op}'", None, found.span(3)
        )
    unit = SIGNAL_UNITS[signal]
    threshold = _threshold(unit, value)
    if threshold is None:
        raise AlertExprError(
            "E602",
            f"alert condition '{text}': '{value}' does not fit {signal}",
            f"{signal} takes {UNIT_EXAMPLES[unit]}",
            found.span(3),
        )
    return AlertExpr(cast("Signal", signal), cast("Comparison", op), threshold)


def _threshold(unit: SignalUnit, value: str) -> float | None:
    """The value in base units, or None when it is not spelt the way ``unit`` needs."""
    if unit == "percent":
        if value.endswith("%") and re.fullmatch(_NUMBER, value[:-1]):
            percent = float(value[:-1])
            return percent / 100 if percent <= 100 else None
        return None
    if unit == "rate":
        number = value.removesuffix("/s").rstrip()
        return float(number) if re.fullmatch(_NUMBER, number) else None
    if unit == "count":
        return float(value) if value.isdigit() else None
    try:
        return parse_duration(value)
    except DurationError:
        return None
