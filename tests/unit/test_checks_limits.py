"""E410-E412, W403: durations must be positive where they time something, and at most 24d."""

from __future__ import annotations

import pytest

from tests.unit.h2_mesh import diagnose

SERVICE = """
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081}
"""


def spec(service: str = "", top: str = "") -> str:
    """One service with extra service-level lines (4-space indent) and extra top-level text."""
    return top + SERVICE + "".join(f"    {line}\n" for line in service.splitlines())


def found(text: str) -> list[tuple[str, int]]:
    """(code, line) of every diagnostic; lines count from the start of ``spec``'s output."""
    return [(d.code, d.span.line) for d in diagnose(text)]


@pytest.mark.parametrize(
    "policy",
    [
        "health_check: {tcp: {}, interval: 0s, timeout: 0ms}",
        "outlier_detection: {interval: 0s}",
        "outlier_detection: {base_ejection_time: 0ms}",
        "connect_timeout: 0s",
        "timeout: 0s",
        "idle_timeout: 0m",
        "retries: {per_try_timeout: 0ms}",
        "retries: {backoff: {base: 0ms}}",
    ],
)
def test_timers_must_be_positive(policy: str) -> None:
    """A zero interval, timeout or backoff is E410, once per value written."""
    diags = diagnose(spec(policy))
    assert diags and {d.code for d in diags} == {"E410"}, diags
    assert all(d.span.line == 9 and "must be longer than 0" in d.message for d in diags)


def test_zero_health_interval_explains_the_spin() -> None:
    (diag,) = diagnose(spec("health_check: {tcp: {}, interval: 0s}"))
    assert diag.code == "E410"
    assert diag.message == "health_check.interval is 0s: it must be longer than 0"
    assert diag.hint is not None and "without pause" in diag.hint


def test_dns_refresh_must_be_positive() -> None:
    text = "services:\n  pay:\n    discovery: {dns: {name: pay, refresh: 0s}}\n"
    assert [d.code for d in diagnose(text)] == ["E410"]


@pytest.mark.parametrize(
    ("policy", "codes"),
    [
        ("connect_timeout: 30d", ["E411"]),
        ("timeout: 25d", ["E411"]),
        ("idle_timeout: 577h", ["E411"]),
        ("health_check: {tcp: {}, interval: 25d}", ["E411"]),
        ("retries: {backoff: {max: 100d}}", ["E411"]),
        ("connect_timeout: 24d", []),
        ("timeout: 576h", []),
        ("idle_timeout: 2073600000ms", []),
        ("idle_timeout: 2073600001ms", ["E411"]),
    ],
)
def test_durations_are_at_most_24_days(policy: str, codes: list[str]) -> None:
    """Above 24d is E411 (HAProxy's 2^31-1 ms timer limit); 24d exactly is fine."""
    diags = diagnose(spec(policy))
    assert [d.code for d in diags] == codes
    if codes:
        assert "limited to 24d" in diags[0].message
        assert diags[0].hint is not None and "2^31-1 ms" in diags[0].hint


def test_route_fault_and_alert_for_are_bounded_but_may_be_zero() -> None:
    routes = (
        "routes:\n  - name: r\n    match: {path_prefix: /a}\n    to: [{service: reviews}]\n"
        "    fault: {delay: {fixed: 30d, percent: 1}}\n"
        "  - name: z\n    to: [{service: reviews}]\n    fault: {delay: {fixed: 0s}}\n"
    )
    alerts = (
        "monitoring:\n  alerts:\n"
        "    - {name: a, service: reviews, when: 'error_rate > 5%', for: 25d}\n"
        "    - {name: b, service: reviews, when: 'error_rate > 5%', for: 0s}\n"
    )
    codes = [d.code for d in diagnose(spec(top="") + routes + alerts)]
    assert codes == ["E411", "E411"]


def test_slo_window_is_exempt() -> None:
    slos = "monitoring:\n  slos:\n    - {name: s, service: reviews, objective: 99.9, window: 30d}\n"
    assert diagnose(spec() + slos) == []


def test_defaults_value_is_reported_once_where_written() -> None:
    """A zero timeout under defaults: is one diagnostic at the defaults line, not per service."""
    text = (
        "defaults: {timeout: 0s}\nservices:\n"
        "  a: {discovery: {static: [{address: 127.0.0.1:1}]}}\n"
        "  b: {discovery: {static: [{address: 127.0.0.1:2}]}}\n"
    )
    assert found(text) == [("E410", 3)]


def test_route_level_timeout_is_checked() -> None:
    routes = "routes:\n  - name: r\n    to: [{service: reviews}]\n    timeout: 0s\n"
    assert found(spec() + routes) == [("E410", 12)]


def test_health_timeout_longer_than_interval_warns() -> None:
    diags = diagnose(spec("health_check: {tcp: {}, interval: 1s, timeout: 2s}"))
    assert [d.code for d in diags] == ["W403"]
    assert diags[0].severity == "warning"
    assert diags[0].message == (
        "health_check.timeout 2s of service 'reviews' is longer than its interval 1s"
    )
    assert diagnose(spec("health_check: {tcp: {}, interval: 1s, timeout: 1s}")) == []
    # built-in timeout (1s) against a shorter interval: reported at the interval
    (diag,) = diagnose(spec("health_check: {tcp: {}, interval: 500ms}"))
    assert diag.code == "W403" and diag.span.line == 9


@pytest.mark.parametrize(
    ("backoff", "codes"),
    [
        ("{base: 1s, max: 100ms}", ["E412"]),
        ("{base: 1s}", ["E412"]),  # built-in max 250ms
        ("{max: 10ms}", ["E412"]),  # built-in base 25ms
        ("{base: 100ms, max: 100ms}", []),
        ("{base: 10ms, max: 1s}", []),
    ],
)
def test_backoff_base_at_most_max(backoff: str, codes: list[str]) -> None:
    diags = diagnose(spec(f"retries: {{attempts: 2, backoff: {backoff}}}"))
    assert [d.code for d in diags] == codes
    if codes:
        assert "is longer than retries.backoff.max" in diags[0].message
