"""Analyses reported as warnings: retry amplification and deadline inversion along caller
chains (W304, W305), failover without a health signal (W405), access rules bypassed by a plain
listener (W510) and an SLO objective written as a ratio (W603)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgen.cli import main
from tests.unit.h2_mesh import codes, diagnose

CHAIN = """
services:
  frontend:
    discovery: {static: [{address: 127.0.0.1:1}]}
    retries: {attempts: FRONT}
    timeout: FRONT_TIMEOUT
  checkout:
    discovery: {static: [{address: 127.0.0.1:2}]}
    retries: {attempts: CHECKOUT}
  payments:
    discovery: {static: [{address: 127.0.0.1:3}]}
    retries: {attempts: PAYMENTS}
    timeout: PAY_TIMEOUT
listeners:
  - name: mesh
    address: 127.0.0.1:0
    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null, client_certificates: required}
access:
  - {from: "*", to: frontend}
  - {from: frontend, to: checkout}
  - {from: checkout, to: payments, methods: [POST]}
  - {from: checkout, to: payments, methods: [GET]}
"""


def chain(
    front: int = 1,
    checkout: int = 1,
    payments: int = 1,
    front_timeout: str = "15s",
    pay_timeout: str = "15s",
) -> str:
    return (
        CHAIN.replace("FRONT_TIMEOUT", front_timeout)
        .replace("PAY_TIMEOUT", pay_timeout)
        .replace("FRONT", str(front))
        .replace("CHECKOUT", str(checkout))
        .replace("PAYMENTS", str(payments))
    )


def _only(text: str, code: str) -> list[str]:
    return [d.message for d in diagnose(text) if d.code == code]


def test_two_retries_at_two_hops_is_nine_requests() -> None:
    """Istio's hidden default: 3 tries x 3 tries; reported once, where the limit is crossed."""
    diags = [d for d in diagnose(chain(front=2, checkout=2, payments=0)) if d.code == "W304"]
    assert [d.message for d in diags] == [
        "one call to 'frontend' can become 9 requests to 'checkout': the tries of each hop "
        "multiply along the caller chain frontend -> checkout ('frontend' 3 x 'checkout' 3)"
    ]
    (diag,) = diags
    assert diag.span.line == 22  # the rule from frontend to checkout
    assert [r.message for r in diag.related] == [
        "calls to 'frontend' make 3 tries here",
        "calls to 'checkout' make 3 tries here",
    ]
    assert [r.span.line for r in diag.related] == [7, 11]


def test_the_product_is_reported_at_the_hop_that_crosses_the_limit() -> None:
    """2 x 2 = 4 is within the limit; the third hop makes 8, reported at its rule only."""
    assert _only(chain(), "W304") == [
        "one call to 'frontend' can become 8 requests to 'payments': the tries of each hop "
        "multiply along the caller chain frontend -> checkout -> payments "
        "('frontend' 2 x 'checkout' 2 x 'payments' 2)"
    ]
    assert _only(chain(payments=0), "W304") == []


def test_one_service_with_many_attempts_is_no_chain() -> None:
    assert _only(chain(front=5, checkout=0, payments=0), "W304") == []


def test_fewest_tries_count_when_several_routes_reach_a_service() -> None:
    """A route to checkout without retries may be the one used: it counts as 1 try."""
    extra = (
        "routes:\n"
        "  - {name: f, to: [{service: frontend}]}\n"
        "  - {name: c, to: [{service: checkout}], match: {path_prefix: /c}}\n"
        "  - {name: c0, to: [{service: checkout}], match: {path_prefix: /d},"
        " retries: {attempts: 0}}\n"
        "  - {name: p, to: [{service: payments}], match: {path_prefix: /p}}\n"
    )
    assert _only(chain(front=2, checkout=2, payments=0) + extra, "W304") == []
    without = extra.replace("retries: {attempts: 0}", "retries: {attempts: 2}")
    assert len(_only(chain(front=2, checkout=2, payments=0) + without, "W304")) == 1


def test_a_cycle_of_rules_is_followed_once() -> None:
    """payments calls frontend back: the walk ends, and the chain it finds is a real one."""
    looped = chain(front=2, checkout=2, payments=0) + "  - {from: payments, to: frontend}\n"
    (message,) = _only(looped, "W304")
    assert "can become 9 requests to 'checkout'" in message, message


def test_deadline_inversion() -> None:
    """frontend's callers give up after 2s while it waits up to 15s for checkout."""
    diags = [d for d in diagnose(chain(front_timeout="2s")) if d.code == "W305"]
    assert [d.message for d in diags] == [
        "'frontend' may wait 15s for 'checkout', but its own callers give up after 2s: the "
        "answer can arrive when nobody waits for it (deadline inversion)"
    ]
    assert diags[0].span.line == 22
    assert [r.span.line for r in diags[0].related] == [8]  # checkout's 15s is built in


def test_shrinking_timeouts_are_fine() -> None:
    assert _only(chain(front_timeout="20s", pay_timeout="5s"), "W305") == []
    assert _only(chain(), "W305") == []  # equal timeouts are no inversion


def test_failover_without_health_signal() -> None:
    base = """
services:
  a:
    discovery: {static: [{address: 127.0.0.1:1, zone: z}]}
    failover: {zones: [z], backup: b}
  b:
    discovery: {static: [{address: 127.0.0.1:2}]}
"""
    (diag,) = [d for d in diagnose(base) if d.code == "W405"]
    assert diag.message == (
        "service 'a' has zone failover and failover to 'b', but nothing can find an endpoint "
        "unhealthy: it has neither health_check nor outlier_detection, so the failover never "
        "happens"
    )
    assert (diag.span.line, diag.span.col) == (7, 5)
    assert "W405" not in codes(base.replace("failover:", "outlier_detection: {}\n    failover:"))
    assert "W405" not in codes("defaults: {health_check: {tcp: {}}}\n" + base)


PLAIN_AND_MTLS = """
services:
  pay: {discovery: {static: [{address: 127.0.0.1:1}]}}
routes:
  - {name: pay, to: [{service: pay}], match: {path_prefix: /pay}}
  - {name: moved, redirect: {location: /x}, match: {path_prefix: /old}}
listeners:
  - name: mtls
    address: 127.0.0.1:0
    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null, client_certificates: required}
  - name: plain
    address: 127.0.0.1:0
    routes: [moved, pay]
access:
  - {from: frontend, to: pay, methods: [POST]}
"""


def test_access_bypassed_by_a_plain_listener() -> None:
    """The plain listener serves `pay` to anyone; its redirect is no bypass."""
    (diag,) = [d for d in diagnose(PLAIN_AND_MTLS) if d.code == "W510"]
    assert diag.message == (
        "listener 'plain' serves route 'pay' without checking callers, so the access rules "
        "that listener 'mtls' enforces on it are bypassed: anyone who reaches 'plain' gets "
        "what 'mtls' refuses"
    )
    assert (diag.span.line, diag.span.col) == (15, 21)  # `pay` in plain's routes
    assert diag.related[0].span.line == 12
    only_redirect = PLAIN_AND_MTLS.replace("routes: [moved, pay]", "routes: [moved]")
    assert "W510" not in codes(only_redirect)
    audited = PLAIN_AND_MTLS.replace("    tls: {cert", "    access: audit\n    tls: {cert")
    assert "W510" not in codes(audited)


def test_slo_objective_written_as_a_ratio() -> None:
    slo = """
services:
  a: {discovery: {static: [{address: 127.0.0.1:1}]}}
monitoring:
  slos: [{name: avail, service: a, objective: OBJ}]
"""
    (diag,) = diagnose(slo.replace("OBJ", "0.999"))
    assert (diag.code, diag.hint) == ("W603", "write the percent: 99.9 for 99.9%")
    assert diag.message == (
        "SLO 'avail' objective 0.999 is below 50: it is a percent, so this asks for only "
        "0.999% good responses and its alerts can never fire"
    )
    assert codes(slo.replace("OBJ", "99.9")) == []
    assert codes(slo.replace("OBJ", "30")) == ["W603"]


def test_analyses_stay_silent_about_a_spec_with_parts_left_out() -> None:
    """With a part left out after an error, chains are not judged (a warning could be false)."""
    from meshgen.pipeline import compile_text

    broken = (
        "version: 1\nmesh: {name: shop, domain: mesh.test}\n"
        + chain(front=2, checkout=2)
        + "  - {from: payments, to: nowhere, paths: [relative]}\n"
    )
    result = compile_text(broken, "mesh.yaml")
    assert "W304" not in [d.code for d in result.diagnostics]
    assert any(d.severity == "error" for d in result.diagnostics)


def test_strict_fails_on_an_objective_written_as_a_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`objective: 0.999` passed even with --strict; now --strict fails on its W603."""
    spec = tmp_path / "mesh.yaml"
    spec.write_text(
        "version: 1\nmesh: {name: shop, domain: mesh.test}\n"
        "services: {a: {discovery: {static: [{address: 127.0.0.1:1}]}}}\n"
        "monitoring: {slos: [{name: avail, service: a, objective: 0.999}]}\n"
    )
    assert main(["validate", str(spec)]) == 0
    assert main(["validate", "--strict", str(spec)]) == 1
    assert "warning[W603]" in capsys.readouterr().err
