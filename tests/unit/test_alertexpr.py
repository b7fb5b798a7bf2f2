"""Alert conditions: SIGNAL OP VALUE with the unit each signal needs."""

from __future__ import annotations

from typing import get_args

import pytest

from meshgen.alertexpr import SIGNALS, AlertExpr, AlertExprError, parse_when
from meshgen.runtime.tables import Signal


def test_the_signals_are_the_runtimes_in_its_order() -> None:
    """SIGNAL_UNITS names every signal the runtime evaluates, and no other."""
    assert get_args(Signal) == SIGNALS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("error_rate > 5%", AlertExpr("error_rate", ">", 0.05)),
        ("healthy_ratio<=50%", AlertExpr("healthy_ratio", "<=", 0.5)),
        ("request_rate < 10", AlertExpr("request_rate", "<", 10.0)),
        ("request_rate >= 2.5/s", AlertExpr("request_rate", ">=", 2.5)),
        ("p99_latency > 250ms", AlertExpr("p99_latency", ">", 0.25)),
        ("p50_latency > 1s", AlertExpr("p50_latency", ">", 1.0)),
        ("cert_expiry < 7d", AlertExpr("cert_expiry", "<", 604800.0)),
        ("healthy_endpoints < 2", AlertExpr("healthy_endpoints", "<", 2.0)),
        ("  error_rate   >=   0.5%  ", AlertExpr("error_rate", ">=", 0.005)),
    ],
)
def test_valid_conditions_give_base_units(text: str, expected: AlertExpr) -> None:
    """Percentages become ratios, durations seconds, rates per second."""
    assert parse_when(text) == expected


@pytest.mark.parametrize(
    ("text", "code", "hint_part"),
    [
        ("eror_rate > 5%", "E601", "did you mean 'error_rate'?"),
        ("latency > 1s", "E601", None),
        ("error_rate = 5%", "E601", "> >= < <="),
        ("error_rate == 5%", "E601", "> >= < <="),
        ("error_rate 5%", "E601", "> >= < <="),
        ("error_rate >", "E601", None),
        ("", "E601", "signals:"),
        ("error_rate > 5", "E602", "percentage"),
        ("error_rate > 150%", "E602", "percentage"),
        ("p99_latency > 5%", "E602", "duration"),
        ("p99_latency > 0.5s", "E602", "duration"),
        ("healthy_endpoints < 1.5", "E602", "whole number"),
        ("request_rate > 5ms", "E602", "per second"),
        ("cert_expiry < 7", "E602", "duration"),
    ],
)
def test_invalid_conditions_say_what_fits(text: str, code: str, hint_part: str | None) -> None:
    """Syntax/signal errors are E601, a value that does not fit its signal is E602."""
    with pytest.raises(AlertExprError) as caught:
        parse_when(text)
    assert caught.value.code == code
    assert caught.value.message.startswith(f"alert condition '{text}'")
    if hint_part is not None:
        assert caught.value.hint is not None and hint_part in caught.value.hint


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("eror_rate > 5%", "eror_rate"),
        ("error_rate => 5%", "=>"),
        ("error_rate > 5", "5"),
        ("  p99_latency <= 5%  ", "5%"),
    ],
)
def test_error_names_the_wrong_part(text: str, bad_part: str) -> None:
    """The error carries the character range of the wrong part, for a caret under just it."""
    with pytest.raises(AlertExprError) as caught:
        parse_when(text)
    start, end = caught.value.part
    assert text[start:end] == bad_part
