"""E601-E605, W601: alert conditions, names, SLO ranges and unreachable services."""

from __future__ import annotations

import pytest

from tests.unit.h2_mesh import ONE_SERVICE, codes, diagnose


def alerts(*items: str, slos: tuple[str, ...] = ()) -> str:
    text = ONE_SERVICE + "monitoring:\n  alerts:\n" + "".join(f"    - {i}\n" for i in items)
    if slos:
        text += "  slos:\n" + "".join(f"    - {s}\n" for s in slos)
    return text


def alert(name: str = "a", when: str = "error_rate > 5%", service: str = "reviews") -> str:
    return f"{{name: {name}, service: {service}, when: '{when}', for: 2m, severity: page}}"


def slo(name: str = "s", objective: str = "99.9", window: str = "30d") -> str:
    return f"{{name: {name}, service: reviews, objective: {objective}, window: {window}}}"


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("error_rate > 5%", []),
        ("p99_latency >= 250ms", []),
        ("eror_rate > 5%", ["E601"]),
        ("error_rate => 5%", ["E601"]),
        ("error_rate > 5s", ["E602"]),
    ],
)
def test_conditions(when: str, expected: list[str]) -> None:
    """Conditions are parsed at build time; the error points at `when`."""
    assert codes(alerts(alert(when=when))) == expected


def test_condition_error_has_hint_and_position() -> None:
    """E601 carries the did-you-mean hint of the signal."""
    (diag,) = diagnose(alerts(alert(when="eror_rate > 5%")))
    assert diag.hint == "did you mean 'error_rate'?"
    assert diag.span.line == 11


def test_alert_names_clash_with_each_other_and_slo_alerts() -> None:
    """Alert names are unique, including the -page/-ticket alerts of SLOs."""
    diags = diagnose(alerts(alert("a"), alert("a"), alert("s-page"), slos=(slo("s"),)))
    clash = [d for d in diags if d.code == "E603"]
    assert len(clash) == 2
    assert clash[0].message == "alert name 'a' of alert 'a' is already used by alert 'a'"
    assert clash[1].message == "alert name 's-page' of SLO 's' is already used by alert 's-page'"


def test_duplicate_slos_clash() -> None:
    """Two SLOs with one name make clashing alerts."""
    assert codes(alerts(alert(), slos=(slo("s"), slo("s")))) == ["E603", "E603"]


@pytest.mark.parametrize(
    ("window", "expected"),
    [("7d", []), ("90d", []), ("30d", []), ("6d", ["E604"]), ("91d", ["E604"]), ("1h", ["E604"])],
)
def test_slo_window(window: str, expected: list[str]) -> None:
    """SLO windows are 7d..90d inclusive."""
    assert codes(alerts(alert(), slos=(slo(window=window),))) == expected


@pytest.mark.parametrize(
    ("objective", "expected"),
    [("99.9", []), ("50", []), ("0.1", ["W603"]), ("0", ["E605"]), ("100", ["E605"])],
)
def test_slo_objective(objective: str, expected: list[str]) -> None:
    """The objective is a percentage strictly between 0 and 100."""
    assert codes(alerts(alert(), slos=(slo(objective=objective),))) == expected


UNROUTED = """
services:
  reviews:
    discovery: {static: [{address: 127.0.0.1:1}]}
    failover: {backup: dr}
    outlier_detection: {}
  dr: {discovery: {static: [{address: 127.0.0.1:2}]}}
  lonely: {discovery: {static: [{address: 127.0.0.1:3}]}}
routes:
  - {name: r, to: [{service: reviews}]}
monitoring:
  alerts:
"""


@pytest.mark.parametrize(
    ("service", "when", "expected"),
    [
        ("reviews", "error_rate > 1%", []),
        ("dr", "error_rate > 1%", []),
        ("lonely", "error_rate > 1%", ["W601"]),
        ("lonely", "p99_latency > 1s", ["W601"]),
        ("lonely", "healthy_endpoints < 1", []),
        ("lonely", "cert_expiry < 7d", ["W602"]),  # not W601; W602: no certificate files
    ],
)
def test_alerts_on_services_no_route_reaches(service: str, when: str, expected: list[str]) -> None:
    """Traffic alerts on a service no served route (or backup chain) reaches never fire."""
    spec = UNROUTED + f"    - {alert(service=service, when=when)}\n"
    assert codes(spec) == expected


def test_slo_on_unrouted_service_warns() -> None:
    """SLOs are traffic signals too."""
    spec = (
        UNROUTED.replace("  alerts:\n", "  slos:\n")
        + "    - {name: s, service: lonely, objective: 99}\n"
    )
    (diag,) = diagnose(spec)
    assert diag.code == "W601" and diag.message.startswith("SLO 's' watches service 'lonely'")


def test_value_error_points_inside_the_quoted_condition() -> None:
    """E602: the caret is under the value, not the whole `when` (quoted scalar: +1 column)."""
    (diag,) = diagnose(alerts(alert(when="p99_latency > 5%")))
    assert diag.code == "E602"
    line = "    - {name: a, service: reviews, when: 'p99_latency > 5%', for: 2m, severity: page}"
    col = line.index("5%") + 1
    assert (diag.span.line, diag.span.col, diag.span.end_col) == (11, col, col + 2)


@pytest.mark.parametrize(
    ("when", "part"),
    [
        ("eror_rate > 5%", "eror_rate"),
        ("error_rate => 5%", "=>"),
        ("error_rate > 5s", "5s"),
    ],
)
def test_condition_errors_point_at_the_wrong_part_of_a_plain_scalar(when: str, part: str) -> None:
    text = ONE_SERVICE + (
        f"monitoring:\n  alerts:\n    - name: a\n      service: reviews\n      when: {when}\n"
    )
    (diag,) = diagnose(text)
    col = len("      when: ") + when.index(part) + 1
    assert (diag.span.line, diag.span.col, diag.span.end_col) == (13, col, col + len(part))


def test_condition_with_escapes_points_at_the_whole_value() -> None:
    """Source columns and characters differ after an escape: fall back to the whole scalar."""
    text = ONE_SERVICE + (
        "monitoring:\n  alerts:\n    - name: a\n      service: reviews\n"
        '      when: "error_rate > 5\\u0025x"\n'
    )
    (diag,) = diagnose(text)
    assert diag.code == "E602"
    assert (diag.span.col, diag.span.end_col) == (13, 13 + len('"error_rate > 5\\u0025x"'))


def test_cert_expiry_without_certificate_files_warns() -> None:
    """W602: no tls.ca/cert is loaded for the service, so the signal has no series."""
    (diag,) = diagnose(alerts(alert(when="cert_expiry < 7d")))
    assert diag.code == "W602" and "can never fire" in diag.message


def test_cert_expiry_with_a_ca_file_is_fine() -> None:
    text = alerts(alert(when="cert_expiry < 7d")).replace(
        "        - {address: 127.0.0.1:9081}\n",
        "        - {address: 127.0.0.1:9081}\n    tls: {mode: simple, ca: /dev/null}\n",
    )
    assert codes(text) == []
