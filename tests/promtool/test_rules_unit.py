"""Hand-computed promtool unit tests: exactly which alerts fire, and when, on known series.

Each case states its arithmetic, asserts it on the embedded evaluator, then hands the same
expectations to ``promtool test rules`` so Prometheus must agree too.
"""

from __future__ import annotations

from pathlib import Path

from promtool_helpers import (
    Scenario,
    assert_promtool_agrees,
    fired_steps,
    monitoring_tables,
    run_embedded,
)

from meshgen.runtime.observe.metrics import LATENCY_BUCKETS
from meshgen.runtime.tables import Alert, BurnWindow, Slo

MINUTE = 4  # steps of 15 s


def _requests(scenario: Scenario, per_step: list[tuple[int, int]]) -> None:
    """Counters for a 200 and a 503 series from per-step (ok, errors) increments."""
    ok, bad, oks, bads = 0, 0, [], []
    for good, errors in per_step:
        ok, bad = ok + good, bad + errors
        oks.append(float(ok))
        bads.append(float(bad))
    base = {"listener": "edge", "route": "reviews", "service": "reviews", "subset": "v1"}
    scenario.add("meshgen_requests_total", {**base, "code": "200"}, oks)
    scenario.add("meshgen_requests_total", {**base, "code": "503"}, bads)


def test_error_rate_fires_after_for(tmp_path: Path) -> None:
    """10 req/s, half of them 5xx from 10m: the 5m ratio passes 5% at 10m45s (7.5%), so
    with ``for: 2m`` the alert fires at 12m45s and not a step before."""
    steps = 16 * MINUTE
    scenario = Scenario(steps)
    # the counters change between samples: step k holds everything up to t = 15k
    _requests(scenario, [(150, 0) if k <= 40 else (75, 75) for k in range(steps)])
    alert = Alert("reviews-errors", "reviews", "error_rate", ">", 0.05, 120.0, "page", "5xx")
    tables = monitoring_tables([alert])
    expected = run_embedded(tables, scenario)
    first = 12 * MINUTE + 3  # 12m45s
    assert fired_steps(expected, "reviews-errors")[0] == first
    assert_promtool_agrees(tables, scenario, range(first - 4, first + 2), tmp_path)


def test_no_traffic_never_fires_even_for_less_than(tmp_path: Path) -> None:
    """Counters that never move mean no traffic: ``error_rate < 1%`` and ``p99 < 10ms`` have
    no value, so neither fires; once requests flow with no errors, ``error_rate < 1%`` does."""
    steps = 12 * MINUTE
    scenario = Scenario(steps)
    _requests(scenario, [(0, 0) if k < 6 * MINUTE else (30, 0) for k in range(steps)])
    bucket_base = {"listener": "edge", "route": "reviews", "service": "reviews"}
    for bound in (*map(repr, LATENCY_BUCKETS), "+Inf"):
        scenario.add(
            "meshgen_request_duration_seconds_bucket", {**bucket_base, "le": bound}, [5.0] * steps
        )
    tables = monitoring_tables(
        [
            Alert("quiet-errors", "reviews", "error_rate", "<", 0.01, 0.0, "info"),
            Alert("quiet-latency", "reviews", "p99_latency", "<", 0.01, 0.0, "info"),
        ]
    )
    expected = run_embedded(tables, scenario)
    assert fired_steps(expected, "quiet-latency") == []
    assert fired_steps(expected, "quiet-errors")[0] == 6 * MINUTE
    assert_promtool_agrees(tables, scenario, range(steps), tmp_path)


def test_latency_quantile_interpolates(tmp_path: Path) -> None:
    """All observations in the (0.1, 0.25] bucket: p50 interpolates to 0.175 s, so
    ``p50_latency > 170ms`` fires and ``p50_latency > 180ms`` does not."""
    steps = 8 * MINUTE
    scenario = Scenario(steps)
    base = {"listener": "edge", "route": "reviews", "service": "reviews"}
    for bound in (*LATENCY_BUCKETS, float("inf")):
        label = "+Inf" if bound == float("inf") else repr(bound)
        per_step = 10.0 if bound >= 0.25 else 0.0
        scenario.add(
            "meshgen_request_duration_seconds_bucket",
            {**base, "le": label},
            [per_step * k for k in range(steps)],
        )
    tables = monitoring_tables(
        [
            Alert("slow", "reviews", "p50_latency", ">", 0.17, 0.0, "ticket"),
            Alert("slower", "reviews", "p50_latency", ">", 0.18, 0.0, "ticket"),
        ]
    )
    expected = run_embedded(tables, scenario)
    assert fired_steps(expected, "slow")[0] == 1
    assert fired_steps(expected, "slower") == []
    assert_promtool_agrees(tables, scenario, range(steps), tmp_path)


def test_slo_page_burn(tmp_path: Path) -> None:
    """99.9% objective, 10% errors from 20m: 1h and 5m ratios pass 14.4 x 0.1% = 1.44%, so
    ``-page`` fires; 6h&30m at 6x (0.6%) also holds later; ``-ticket`` (3x/1x) fires too."""
    steps = 40 * MINUTE
    scenario = Scenario(steps)
    _requests(scenario, [(150, 0) if k <= 80 else (135, 15) for k in range(steps)])
    windows = (BurnWindow(3600, 300, 14.4), BurnWindow(21600, 1800, 6.0))
    tickets = (BurnWindow(86400, 7200, 3.0), BurnWindow(259200, 21600, 1.0))
    slo = Slo("reviews-availability", "reviews", 99.9, 30 * 86400.0, windows, tickets)
    tables = monitoring_tables(slos=[slo])
    expected = run_embedded(tables, scenario)
    page = fired_steps(expected, "reviews-availability-page")
    assert page and page[0] > 80
    assert fired_steps(expected, "reviews-availability-ticket")
    assert_promtool_agrees(tables, scenario, range(0, steps, 2), tmp_path)
