"""Active health checks against hostile targets: every probe ends within its timeout or a limit,
counts as failed unless a final answer with an expected status came, and holds no more memory
than the limits allow.

One `python DIST` checks ``hostile_backend.py`` once per service below, each service probing
another of its paths (interval 200 ms, timeout 300 ms, down at the first failure, back only
after 1000 passes, so a single failed probe shows for the rest of the test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from polling import eventually
from runtime_harness import HOSTILE, Runtime, build_dist, memory, run_dist, script_backend, spec
from test_proxy_semantics import samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

FAILING = {
    "trickle-head": "/trickle-head",  # a head byte every 50 ms: the timeout
    "trickle-body": "/trickle-body",  # a body byte every 50 ms: the timeout
    "endless-head": "/endless-head",  # over 64 KiB of head
    "endless-body": "/endless-body",  # over 64 KiB of body
    "trailer-flood": "/trailer-flood",  # a trailer field without end
    "interim-flood": "/1xx-flood",  # 100 Continue for ever, 64 KiB of heads
    "interim-trickle": "/1xx-trickle",  # a 100 Continue every 100 ms: the timeout
    "interim-body": "/1xx-body",  # a 1xx with a body (then 200): no 1xx has one
    "switching": "/101",  # 101 to a probe that asked for no upgrade
    "garbage": "/garbage",
}
PASSING = {
    "plain": "/ok/probe",
    "early-hints": "/early-hints",  # 103 and 100 before the 200: interim, skipped
    "unsolicited": "/unsolicited",  # 200, then bytes on the idle connection: dropped, reopened
}


def _service(name: str, address: str, path: str) -> str:
    return (
        f"  {name}:\n"
        f'    discovery: {{static: [{{address: "{address}"}}]}}\n'
        f"    health_check: {{http: {{path: {path}}}, interval: 200ms, timeout: 300ms,"
        " unhealthy_threshold: 1, healthy_threshold: 1000}\n"
    )


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with script_backend(HOSTILE) as (address, _):
        services = "".join(_service(n, address, p) for n, p in {**FAILING, **PASSING}.items())
        routes = "".join(
            f"  - {{name: {n}, match: {{host: {n}}}, to: [{{service: {n}}}]}}\n"
            for n in {**FAILING, **PASSING}
        )
        text = spec("services:\n" + services + "routes:\n" + routes)
        dist = build_dist(tmp_path_factory.mktemp("health") / "dist", text)
        with run_dist(dist) as rt:
            yield rt


def healthy(rt: Runtime) -> dict[str, float]:
    return {lab["service"]: v for lab, v in samples(rt, "meshgen_endpoint_healthy")}


def test_hostile_targets_fail_their_checks_and_memory_stays_bounded(checked: Runtime) -> None:
    """Every hostile target is down within a few probes; the well-behaved ones (an answer
    after interim responses included) stay up through about ten probes each; the runtime's
    resident memory grows by less than 64 MiB while ten targets attack it for 2 s, and
    nothing they send makes it log a traceback."""
    before = memory(checked.proc.pid) // 1024
    down = eventually(
        lambda: (h := healthy(checked)) and all(h.get(n) == 0 for n in FAILING) and h,
        timeout=5,
        what="every hostile target down",
        context=lambda: str(healthy(checked)),
    )
    assert all(down[n] == 1 for n in PASSING), down
    started = time.monotonic()
    peak = before
    while time.monotonic() - started < 2:
        peak = max(peak, memory(checked.proc.pid) // 1024)
        time.sleep(0.05)
    now = healthy(checked)
    assert all(now[n] == 1 for n in PASSING) and all(now[n] == 0 for n in FAILING), now
    assert peak - before < 64 * 1024, (before, peak)
    assert "Traceback" not in checked.log_text()  # a 101 is a failed probe, not a crash
