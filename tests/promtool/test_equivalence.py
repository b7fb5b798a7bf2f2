"""Equivalence: promtool and the embedded evaluator fire the same alerts at the same times.

Seeded random scenarios mix everything that makes PromQL subtle: traffic phases with idle
gaps (no traffic), counter resets, series that appear late or go stale, several routes summed,
histograms whose quantile moves across buckets, flapping endpoint health and an expiring
certificate. Every alert kind and both SLO alerts are checked at every 15 s evaluation.
gRPC scenarios label the same traffic with ``grpc_status``: an error is then a 5xx or a
server-side gRPC status (a series that is both counts once), a client-side one (NOT_FOUND,
PERMISSION_DENIED) is not.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from promtool_helpers import Scenario, assert_promtool_agrees, dump, fired_steps, monitoring_tables

from meshgen.runtime.observe.metrics import LATENCY_BUCKETS
from meshgen.runtime.tables import Alert, BurnWindow, Slo

HOSTILE = 'it\'s "quoted"\n\t\\ {{ x }} {% y %} $labels \u00e9\u2014\U0001f600\u2028'
STEPS = 60 * 4  # one hour of 15 s evaluations
ROUTES = (("edge", "reviews"), ("edge", "reviews-v2"), ("internal", "reviews"))

ALERTS = (
    Alert("errors-high", "reviews", "error_rate", ">", 0.05, 60.0, "page", "{{ $value }} literal"),
    Alert("errors-low", "reviews", "error_rate", "<=", 0.01, 0.0, "info", HOSTILE),
    Alert("rate-low", "reviews", "request_rate", "<", 4.0, 0.0, "ticket"),
    Alert("rate-high", "reviews", "request_rate", ">=", 25.0, 30.0, "ticket"),
    Alert("p50-slow", "reviews", "p50_latency", ">", 0.06, 0.0, "ticket"),
    Alert("p90-fast", "reviews", "p90_latency", "<", 0.05, 0.0, "info"),
    Alert("p99-slow", "reviews", "p99_latency", ">=", 0.4, 45.0, "page"),
    Alert("few-endpoints", "reviews", "healthy_endpoints", "<", 2.0, 0.0, "page"),
    Alert("health-ratio", "reviews", "healthy_ratio", "<=", 0.5, 30.0, "ticket"),
    Alert("cert-soon", "reviews", "cert_expiry", "<", 1200.0, 0.0, "ticket"),
)
SLOS = (
    Slo(
        "reviews-availability", "reviews", 99.0, 30 * 86400.0,
        (BurnWindow(3600, 300, 14.4), BurnWindow(21600, 1800, 6.0)),
        (BurnWindow(86400, 7200, 3.0), BurnWindow(259200, 21600, 1.0)),
    ),
    Slo(
        "reviews-28d", "reviews", 95.0, 28 * 86400.0,
        (BurnWindow(3600, 300, 14.4 * 28 / 30), BurnWindow(21600, 1800, 6.0 * 28 / 30)),
        (BurnWindow(86400, 7200, 3.0 * 28 / 30), BurnWindow(259200, 21600, 28 / 30)),
    ),
)  # fmt: skip


def _phases(rng: random.Random) -> list[tuple[float, float, float]]:
    """Per step: (requests per second, error share, slow share), in phases of 1-12 minutes."""
    out: list[tuple[float, float, float]] = []
    while len(out) < STEPS:
        rps = rng.choice([0.0, 0.0, 2.0, 8.0, 20.0, 40.0])
        errors = rng.choice([0.0, 0.0, 0.005, 0.03, 0.2, 0.6])
        slow = rng.choice([0.0, 0.02, 0.3, 0.9])
        out.extend([(rps, errors, slow)] * (4 * rng.randint(1, 12)))
    return out[:STEPS]


def _latency(rng: random.Random, slow: bool) -> float:
    return rng.uniform(0.2, 3.0) if slow else rng.expovariate(1 / 0.015)


# (code, grpc_status) of each kind of answer: (ok, not found, error, other error, both).
HTTP_KINDS = (("200", ""), ("404", ""), ("503", ""), ("500", ""), ("503", ""))
GRPC_KINDS = (("200", "0"), ("200", "5"), ("200", "14"), ("200", "13"), ("503", "14"))


def make_scenario(seed: int, grpc: bool = False) -> Scenario:
    rng = random.Random(seed)
    ok, not_found, error, other, both = GRPC_KINDS if grpc else HTTP_KINDS
    scenario = Scenario(STEPS)
    phases = _phases(rng)
    bounds = (*LATENCY_BUCKETS, float("inf"))
    for listener, route in ROUTES:
        share = rng.uniform(0.2, 0.5)
        start = rng.choice([0, 0, rng.randrange(STEPS // 2)])  # some routes appear late
        reset = rng.choice([None, rng.randrange(start + 1, STEPS)])  # a restart resets counters
        codes = dict.fromkeys((ok, not_found, error, other, both), 0.0)
        series: dict[tuple[str, str], list[float | None]] = {c: [] for c in codes}
        buckets = [0.0] * len(bounds)
        bucket_series: list[list[float | None]] = [[] for _ in bounds]
        for step, (rps, error_share, slow_share) in enumerate(phases):
            if step == reset:
                codes = dict.fromkeys(codes, 0.0)
                buckets = [0.0] * len(bounds)
            n = rng.randint(0, round(2 * rps * share * 15)) if rps else 0
            for _ in range(n):
                roll = rng.random()
                code = (
                    error if roll < error_share * 0.5 else both if roll < error_share * 0.7
                    else other if roll < error_share else
                    not_found if roll < error_share + 0.02 else ok
                )  # fmt: skip
                codes[code] += 1
                value = _latency(rng, rng.random() < slow_share)
                for i, bound in enumerate(bounds):
                    if value <= bound:
                        buckets[i] += 1
            for code, total in codes.items():
                # the other-error series is only created by its first one, like the runtime's
                present = step >= start and (code != other or total > 0)
                series[code].append(total if present else None)
            for i, total in enumerate(buckets):
                bucket_series[i].append(total if step >= start else None)
        base = {"listener": listener, "route": route, "service": "reviews", "subset": "all"}
        for (code, status), values in series.items():
            labels = {**base, "code": code, **({"grpc_status": status} if grpc else {})}
            scenario.add("meshgen_requests_total", labels, values)
        hbase = {"listener": listener, "route": route, "service": "reviews"}
        for bound, values in zip(bounds, bucket_series, strict=True):
            label = "+Inf" if bound == float("inf") else repr(bound)
            scenario.add("meshgen_request_duration_seconds_bucket", {**hbase, "le": label}, values)
    # noise: another service's traffic must never count for reviews
    scenario.add(
        "meshgen_requests_total",
        {"listener": "edge", "route": "ratings", "service": "ratings", "subset": "all",
         "code": "503"},
        [float(100 * k) for k in range(STEPS)],
    )  # fmt: skip
    for endpoint in ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"):
        state, values = 1.0, []
        gone = rng.choice([None, rng.randrange(STEPS)])
        for step in range(STEPS):
            if rng.random() < 0.04:
                state = 1.0 - state
            missing = gone is not None and gone <= step < gone + 20  # DNS dropped it a while
            values.append(None if missing else state)
        scenario.add("meshgen_endpoint_healthy", {"service": "reviews", "endpoint": endpoint},
                     values)  # fmt: skip
    not_after = float(rng.randrange(1500, 3000))
    scenario.add(
        "meshgen_cert_expiry_timestamp_seconds",
        {"service": "reviews", "file": "certs/reviews.pem"},
        [not_after] * STEPS,
    )
    return scenario


@pytest.mark.parametrize(
    ("seed", "grpc"), [(1, False), (2, False), (3, False), (4, False), (5, True), (6, True)]
)
def test_promtool_and_embedded_fire_identically(seed: int, grpc: bool, tmp_path: Path) -> None:
    """Same series, every alert, every evaluation time: identical firing sets."""
    tables = monitoring_tables(ALERTS, SLOS)
    scenario = make_scenario(seed, grpc)
    expected = assert_promtool_agrees(tables, scenario, range(STEPS), tmp_path)
    fired = {name for alerts in expected.values() for name, a in alerts.items() if a}
    assert len(fired) >= 5, dump(expected)  # the scenario exercises most rules


def test_scenarios_cover_every_rule() -> None:
    """Across the seeds every alert fires at least once and at least once does not fire."""
    from promtool_helpers import run_embedded

    tables = monitoring_tables(ALERTS, SLOS)
    seen_firing: set[str] = set()
    seen_quiet: set[str] = set()
    for seed, grpc in ((1, False), (2, False), (3, False), (4, False), (5, True), (6, True)):
        expected = run_embedded(tables, make_scenario(seed, grpc))
        for name in expected[0]:
            steps = fired_steps(expected, name)
            if steps:
                seen_firing.add(name)
            if len(steps) < STEPS:
                seen_quiet.add(name)
    names = set(run_embedded(tables, Scenario(1))[0])
    assert seen_firing == names, names - seen_firing
    assert seen_quiet == names, names - seen_quiet


@pytest.mark.parametrize(
    ("kinds", "ratio"),
    [
        ({("200", "14"): 1.0, ("200", "0"): 3.0}, 0.25),  # a trailers-only UNAVAILABLE errs
        ({("503", "14"): 1.0, ("200", "0"): 3.0}, 0.25),  # in both selectors: counted once
        ({("200", "5"): 1.0, ("200", "7"): 1.0, ("200", "0"): 2.0}, 0.0),  # the caller's fault
        ({("500", ""): 1.0, ("200", "4"): 1.0, ("200", ""): 2.0}, 0.5),
    ],
)
def test_grpc_error_ratio_counts_server_statuses_once(
    kinds: dict[tuple[str, str], float], ratio: float, tmp_path: Path
) -> None:
    """Steady traffic of known kinds: the embedded evaluator's error ratio is exact, and
    promtool fires the same threshold alerts around it."""
    steps = 40
    scenario = Scenario(steps)
    base = {"listener": "edge", "route": "r", "service": "reviews", "subset": ""}
    for (code, status), per_second in kinds.items():
        values = [per_second * 15 * k for k in range(steps)]
        scenario.add("meshgen_requests_total", {**base, "code": code, "grpc_status": status},
                     values)  # fmt: skip
    alerts = (
        Alert("above", "reviews", "error_rate", ">", ratio - 0.01, 0.0, "page"),
        Alert("below", "reviews", "error_rate", "<", ratio + 0.01, 0.0, "page"),
    )
    expected = assert_promtool_agrees(monitoring_tables(alerts), scenario, range(steps), tmp_path)
    last = expected[steps - 1]
    assert last["below"] and last["above"], dump(expected)  # the ratio is within 0.01
