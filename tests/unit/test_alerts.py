"""Embedded evaluator: PromQL arithmetic, ``for`` state machine, no-traffic rule, Alertmanager.

Everything runs on an injected clock (15 s steps), so nothing sleeps for minutes.
(tests/promtool/ checks the same rules against the real Prometheus engine.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polling import eventually, eventually_async
from pytest_httpserver import HTTPServer

from meshgen.runtime.observe.alerts import (
    AlertEvaluator,
    burn_threshold,
    error_budget,
    format_duration,
    format_threshold,
)
from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.observe.timeseries import INGEST_SLICE, Series, Store, histogram_quantile
from meshgen.runtime.tables import Alert, BurnWindow, Slo

ERRORS = Alert("reviews-errors", "reviews", "error_rate", ">", 0.05, 60.0, "page", "failing")


def _series(points: list[tuple[float, float]]) -> Series:
    s = Series()
    for t, v in points:
        s.append(t, v)
    return s


def test_rate_exact_window_needs_no_extrapolation() -> None:
    """1/s sampled every 15 s across the closed 5m window: exactly 1.0."""
    s = _series([(t, t) for t in range(0, 301, 15)])
    assert s.rate(300.0, 300.0) == 1.0


def test_rate_extrapolates_half_an_interval_towards_a_distant_start() -> None:
    """Series born at 150 s: 150 s sampled + 7.5 s (half the average interval) -> 0.525/s."""
    s = _series([(t, t) for t in range(150, 301, 15)])
    assert s.rate(300.0, 300.0) == pytest.approx(150 * (157.5 / 150) / 300)


def test_rate_never_extrapolates_below_zero() -> None:
    """A counter born near zero extrapolates only to where it would have been 0."""
    s = _series([(0.0, 5.0), (15.0, 20.0), (30.0, 35.0)])
    # to_start = 270 would exceed the threshold; duration to zero = 30 * 5/30 = 5 s
    assert s.rate(30.0, 300.0) == pytest.approx(30 * ((30 + 5 + 0) / 30) / 300)


def test_rate_corrects_counter_resets_and_needs_two_samples() -> None:
    s = _series([(0.0, 0.0), (15.0, 10.0), (30.0, 20.0), (45.0, 5.0), (60.0, 15.0)])
    assert s.rate(60.0, 60.0) == pytest.approx((15 - 0 + 20) / 60)
    assert _series([(0.0, 1.0)]).rate(0.0, 300.0) is None
    assert s.rate(500.0, 300.0) is None  # every sample is outside the window


def test_series_trim_keeps_the_window() -> None:
    s = _series([(float(t), float(t)) for t in range(0, 3000, 15)])
    s.trim(2000.0)
    assert s.t[s.head] == 2010.0
    assert s.rate(2985.0, 300.0) == pytest.approx(1.0)


def test_histogram_quantile_interpolates_like_promql() -> None:
    inf = math.inf
    assert histogram_quantile(0.5, {0.1: 0, 0.25: 10, inf: 10}) == pytest.approx(0.175)
    assert histogram_quantile(0.99, {0.1: 0, 0.25: 0, inf: 10}) == 0.25  # +Inf bucket
    assert histogram_quantile(0.5, {0.1: 5, 0.25: 3, inf: 10}) == pytest.approx(0.1)  # monotonic
    assert math.isnan(histogram_quantile(0.5, {0.1: 0, inf: 0}))  # no observations
    assert math.isnan(histogram_quantile(0.5, {0.1: 1, 0.25: 2}))  # no +Inf bucket
    assert histogram_quantile(1.5, {0.1: 1, inf: 1}) == inf


def test_budget_and_threshold_arithmetic() -> None:
    slo = Slo("a", "s", 99.9, 30 * 86400.0, (BurnWindow(3600, 300, 14.4),), ())
    assert error_budget(slo) == 0.001 and burn_threshold(slo, slo.page[0]) == 0.0144
    assert format_duration(300) == "5m" and format_duration(86400 * 3) == "3d"
    assert format_duration(0.25) == "250ms" and format_duration(90) == "90s"
    assert format_threshold("error_rate", 0.05) == "5%"
    assert format_threshold("p99_latency", 0.5) == "500ms"


class Clocked:
    """A Metrics plus an evaluator stepped every 15 s by hand."""

    def __init__(self, alerts: list[Alert], slos: list[Slo] | None = None) -> None:
        self.metrics = Metrics()
        self.now = 1_700_000_000.0
        self.evaluator = AlertEvaluator(alerts, slos or (), clock=lambda: self.now)
        self.sent: list[dict[str, Any]] = []

    def tick(self, ok: int = 0, errors: int = 0, steps: int = 1) -> None:
        for _ in range(steps):
            for _ in range(ok):
                self.metrics.observe_request("edge", "r", "reviews", "", 200, 0.01)
            for _ in range(errors):
                self.metrics.observe_request("edge", "r", "reviews", "", 503, 0.01)
            self.sent += self.evaluator.step(self.now, self.metrics.collect(self.evaluator.wanted))
            self.now += 15

    def state(self, name: str) -> str | None:
        st = self.evaluator.states.get(name)
        return st.state if st else None


def _first_tick(c: Clocked, state: str, limit: int = 60, **traffic: int) -> int:
    for n in range(1, limit + 1):
        c.tick(**traffic)
        if c.state("reviews-errors") == state:
            return n
    raise AssertionError(f"never {state}")


def test_for_pending_then_firing_then_resolved() -> None:
    """Pending on the first result, firing exactly ``for`` (60 s = 4 steps) later, resolved
    once the errors leave the 5m window; Alertmanager gets the firing and the resolution."""
    c = Clocked([ERRORS])
    c.tick(ok=100, steps=21)
    assert c.state("reviews-errors") is None
    _first_tick(c, "pending", ok=50, errors=50)
    for _ in range(3):
        c.tick(ok=50, errors=50)
        assert c.state("reviews-errors") == "pending"  # < 60 s since it became active
    c.tick(ok=50, errors=50)
    assert c.state("reviews-errors") == "firing"
    assert [a["labels"]["alertname"] for a in c.sent] == ["reviews-errors"]
    _first_tick(c, "resolved", ok=100)
    assert c.evaluator.firing() == []
    state = c.evaluator.states["reviews-errors"]
    assert state.resolved_at is not None
    assert c.sent[-1]["endsAt"] == _iso(state.resolved_at)


def test_pending_that_breaks_before_for_starts_over() -> None:
    """A pending alert whose condition stops before ``for`` (10m) is dropped, never sent."""
    c = Clocked([dataclasses.replace(ERRORS, for_s=600.0)])
    c.tick(ok=100, steps=21)
    _first_tick(c, "pending", ok=50, errors=50)
    first_active = c.evaluator.states["reviews-errors"].active_at
    c.tick(ok=100, steps=30)  # below 5% again: the pending alert is dropped
    assert c.state("reviews-errors") is None
    _first_tick(c, "pending", ok=10, errors=90)
    assert c.evaluator.states["reviews-errors"].active_at > first_active
    assert c.sent == []


def test_no_traffic_never_fires() -> None:
    """No requests at all, then counters that stop: ratios and quantiles have no value."""
    alerts = [
        Alert("low-errors", "reviews", "error_rate", "<", 0.5, 0.0, "info"),
        Alert("fast", "reviews", "p99_latency", "<", 10.0, 0.0, "info"),
    ]
    c = Clocked(alerts)
    c.tick(steps=40)
    assert c.evaluator.firing() == []
    c.tick(ok=10, steps=2)
    assert {a["labels"]["alertname"] for a in c.evaluator.firing()} == {"low-errors", "fast"}
    c.tick(steps=25)  # traffic stopped > 5m ago: both resolve
    assert c.evaluator.firing() == []


def test_health_gauges_and_forgotten_endpoints() -> None:
    alert = Alert("few", "reviews", "healthy_endpoints", "<", 2.0, 0.0, "page")
    ratio = Alert("half", "reviews", "healthy_ratio", "<=", 0.5, 0.0, "ticket")
    c = Clocked([alert, ratio])
    for ep in ("a:1", "b:1", "c:1"):
        c.metrics.set_endpoint_healthy("reviews", ep, True)
    c.tick()
    assert c.evaluator.firing() == []
    c.metrics.set_endpoint_healthy("reviews", "a:1", False)
    c.metrics.forget_endpoint("reviews", "b:1")  # its series goes stale at once
    c.tick()
    names = {a["labels"]["alertname"] for a in c.evaluator.firing()}
    assert names == {"few", "half"}


def test_cert_expiry_uses_the_injected_clock() -> None:
    alert = Alert("cert", "reviews", "cert_expiry", "<", 3600.0, 0.0, "ticket")
    c = Clocked([alert])
    c.metrics.set_cert_expiry("reviews", "certs/r.pem", c.now + 3600 + 20)
    c.tick(steps=2)
    assert c.state("cert") is None
    c.tick()
    assert c.state("cert") == "firing"


def test_slo_page_fires_on_fast_burn() -> None:
    windows = (BurnWindow(3600, 300, 14.4), BurnWindow(21600, 1800, 6.0))
    slo = Slo("avail", "reviews", 99.9, 30 * 86400.0, windows, ())
    c = Clocked([], [slo])
    c.tick(ok=100, steps=40)
    assert c.state("avail-page") is None
    c.tick(ok=60, errors=40, steps=10)  # 1h: 40% x 10/50 steps = 8% > 1.44%, 5m: more
    assert c.state("avail-page") == "firing"
    labels = c.evaluator.firing()[0]["labels"]
    assert labels == {"alertname": "avail-page", "service": "reviews", "severity": "page",
                      "slo": "avail"}  # fmt: skip


def test_update_rules_keeps_surviving_state() -> None:
    c = Clocked([ERRORS])
    c.tick(ok=100, steps=21)
    c.tick(ok=10, errors=90, steps=6)
    assert c.state("reviews-errors") == "firing"
    other = Alert("other", "reviews", "request_rate", ">", 1000.0, 0.0, "info")
    c.evaluator.update_rules([ERRORS, other], [])
    assert c.state("reviews-errors") == "firing"
    c.evaluator.update_rules([other], [])
    assert c.evaluator.states == {}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def test_alertmanager_receives_firing_then_resolved(httpserver: HTTPServer) -> None:
    """``run()`` POSTs v2 alerts: firing with a future endsAt, then resolved with endsAt =
    the resolution time (pytest-httpserver stands in for Alertmanager)."""
    received: list[list[dict[str, Any]]] = []

    def record(request: Any) -> Any:
        from werkzeug import Response

        received.append(json.loads(request.data))
        return Response("", status=200)

    httpserver.expect_request("/api/v2/alerts", method="POST").respond_with_handler(record)
    alert = Alert("reviews-errors", "reviews", "error_rate", ">", 0.05, 0.0, "page", "failing")
    metrics = Metrics()
    ticks = iter(range(10_000))
    base = 1_700_000_000.0
    phase = {"errors": 0}

    def clock() -> float:
        # each evaluation is 15 s later; traffic is added per evaluation (5% .. 50% errors)
        for _ in range(10):
            metrics.observe_request("edge", "r", "reviews", "", 200, 0.01)
        for _ in range(phase["errors"]):
            metrics.observe_request("edge", "r", "reviews", "", 503, 0.01)
        return base + 15 * next(ticks)

    evaluator = AlertEvaluator([alert], [], alertmanager=httpserver.url_for("/"), clock=clock)

    async def drive() -> None:
        task = asyncio.create_task(evaluator.run(metrics, interval_s=0.001))
        try:
            await eventually_async(lambda: len(evaluator.store.data) > 0, timeout=5, interval=0.005)
            phase["errors"] = 10
            await eventually_async(lambda: len(received) >= 1, timeout=5, interval=0.005)
            phase["errors"] = 0
            await eventually_async(
                lambda: _state(evaluator) == "resolved", timeout=10, interval=0.005
            )
            ends = _iso(evaluator.states["reviews-errors"].resolved_at or 0.0)
            await eventually_async(
                lambda: received[-1][0]["endsAt"] == ends, timeout=10, interval=0.005
            )
        finally:
            task.cancel()

    asyncio.run(drive())
    firing = received[0][0]
    assert firing["labels"] == {"alertname": "reviews-errors", "service": "reviews",
                                "severity": "page"}  # fmt: skip
    assert firing["annotations"]["summary"] == "failing"
    assert firing["startsAt"].endswith("Z") and firing["endsAt"] > firing["startsAt"]
    resolved = received[-1][0]
    assert resolved["startsAt"] == firing["startsAt"]
    assert resolved["endsAt"] > resolved["startsAt"]


def test_alertmanager_down_is_not_fatal() -> None:
    """A refused POST is logged and reported False; the evaluator keeps going."""
    from meshgen.runtime.observe.alerts import post_alerts

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert asyncio.run(post_alerts(f"http://127.0.0.1:{port}", [{"labels": {}}], 1.0)) is False


@contextlib.contextmanager
def _receiver(answer: bytes, trickle: bytes = b"") -> Iterator[str]:
    """A hostile Alertmanager on 127.0.0.1: each connection gets ``answer``, then ``trickle``
    one byte every 0.3 s until the block ends; yields its base URL."""
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)

    def serve() -> None:
        conns = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            conn.sendall(answer)
            for byte in trickle:
                if stop.wait(0.3):
                    break
                conn.sendall(bytes([byte]))
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


def test_an_alertmanager_that_trickles_holds_a_post_for_its_timeout_only(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """urllib's timeout bounds each read: an answer trickled a byte at a time would hold the
    evaluator for ever. The POST gives up after its timeout; while its thread is still held,
    the next POST is skipped (not queued); once the receiver lets go, POSTs go out again."""
    from meshgen.runtime.observe.alerts import post_alerts

    httpserver.expect_request("/api/v2/alerts", method="POST").respond_with_data("")
    good = httpserver.url_for("/")
    alerts = [{"labels": {"alertname": "a"}}]
    with _receiver(b"HTTP/1.1 200 OK\r\nx-slow: ", trickle=b"s" * 100) as slow:
        started = time.monotonic()
        assert asyncio.run(post_alerts(slow, alerts, 1.0)) is False
        assert time.monotonic() - started < 3
        assert asyncio.run(post_alerts(good, alerts, 1.0)) is False
        assert "the last POST has not ended" in caplog.text
        assert not httpserver.log
    eventually(lambda: asyncio.run(post_alerts(good, alerts, 1.0)), timeout=10, interval=0.2,
               what="a POST once the trickling receiver let go")  # fmt: skip
    assert len(httpserver.log) == 1


def test_an_alertmanager_that_answers_no_http_is_a_logged_failure() -> None:
    """http.client's BadStatusLine is no OSError: it used to end the evaluator's task."""
    from meshgen.runtime.observe.alerts import post_alerts

    with _receiver(b"\x00\x01 this is no HTTP\r\n\r\n") as junk:
        assert asyncio.run(post_alerts(junk, [{"labels": {}}], 1.0)) is False


def _state(evaluator: AlertEvaluator) -> str | None:
    st = evaluator.states.get("reviews-errors")
    return st.state if st else None


def _contents(store: Store) -> dict[tuple[str, str, object], tuple[list[float], list[float]]]:
    return {
        (name, service, labels): (list(series.t[series.head :]), list(series.v[series.head :]))
        for name, services in store.data.items()
        for service, by_labels in services.items()
        for labels, series in by_labels.items()
    }


@settings(max_examples=25, deadline=None)
@given(
    traffic=st.lists(
        st.tuples(
            st.sampled_from(["reviews", "ratings", "quiet"]),
            st.sampled_from([200, 404, 503]),
            st.floats(0.0005, 3.0),
            st.booleans(),
        ),
        max_size=40,
    ),
    steps=st.integers(1, 6),
)
def test_the_evaluator_collects_only_what_it_reads_and_sees_the_same(
    traffic: list[tuple[str, int, float, bool]], steps: int
) -> None:
    """``run`` collects only ``wanted`` (at 10,000 endpoints a full collection every 15 s
    stalled the loop): fed that, the store and every alert are what a full collection gives."""
    alerts = [
        dataclasses.replace(ERRORS, name=f"{signal}-{service}", service=service, signal=signal)
        for service in ("reviews", "ratings")
        for signal in ("error_rate", "request_rate", "p99_latency", "healthy_ratio", "cert_expiry")
    ]
    slo = Slo("ratings-slo", "ratings", 99.0, 30 * 86400.0, (BurnWindow(3600, 300, 14.4),), ())
    metrics = Metrics()
    full = AlertEvaluator(alerts, [slo], clock=lambda: 0.0)
    lean = AlertEvaluator(alerts, [slo], clock=lambda: 0.0)
    now = 1_700_000_000.0
    for step in range(steps):
        for service, code, seconds, healthy in traffic:
            metrics.observe_request("edge", "r", service, "", code, seconds)
            metrics.set_endpoint_healthy(service, f"127.0.0.1:{8000 + code}", healthy)
        metrics.set_cert_expiry("reviews", "/certs/reviews.pem", now + 86400.0 * step)
        assert full.step(now, metrics.collect()) == lean.step(now, metrics.collect(lean.wanted))
        now += 15
    assert _contents(lean.store) == _contents(full.store)
    assert {k: v.as_json() for k, v in lean.states.items()} == {
        k: v.as_json() for k, v in full.states.items()
    }
    assert "meshgen_endpoint_healthy" not in metrics.collect(AlertEvaluator([], []).wanted)


@settings(max_examples=25, deadline=None)
@given(
    rounds=st.lists(
        st.lists(st.tuples(st.integers(0, 30), st.sampled_from([200, 503])), max_size=60),
        min_size=1,
        max_size=4,
    ),
    per_slice=st.integers(1, 50),
)
def test_ingesting_in_slices_stores_what_one_ingest_does(
    rounds: list[list[tuple[int, int]]], per_slice: int
) -> None:
    """The evaluator ingests in slices between which the loop runs; the store ends the same,
    series that left the snapshot turning stale included, and it paused between slices."""
    whole, sliced = Store(lambda name, service: 300.0), Store(lambda name, service: 300.0)
    now = 1_700_000_000.0
    for requests in rounds:
        metrics = Metrics()  # a fresh one each round: missing series go stale
        for service, code in requests:
            metrics.observe_request("edge", "r", f"svc-{service}", "", code, 0.01)
        samples = metrics.collect()
        whole.ingest(now, samples)
        pauses = sum(1 for _ in sliced.ingest_in_slices(now, samples, per_slice))
        assert pauses >= sum(map(len, samples.values())) // per_slice
        assert _contents(sliced) == _contents(whole)
        stale = {k for k, s in _series_of(whole).items() if s.stale}
        assert {k for k, s in _series_of(sliced).items() if s.stale} == stale
        now += 15


def _series_of(store: Store) -> dict[tuple[str, str, object], Series]:
    return {
        (name, service, labels): series
        for name, services in store.data.items()
        for service, by_labels in services.items()
        for labels, series in by_labels.items()
    }


def test_evaluation_lets_the_event_loop_run_while_it_ingests() -> None:
    """With 2,000 services' series, one evaluation pauses for the loop at least once per
    ``INGEST_SLICE`` series (it used to hold the loop for all of them: ~130 ms at 10,000
    endpoints, a gap in every health check's schedule)."""
    metrics = Metrics()
    for service in range(2000):
        metrics.observe_request("edge", "r", f"svc-{service}", "", 200, 0.01)
    evaluator = AlertEvaluator([], [], clock=lambda: 1_700_000_000.0)
    series = sum(map(len, metrics.collect(evaluator.wanted).values()))

    async def drive() -> int:
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        run = asyncio.create_task(evaluator.run(metrics))
        await eventually_async(lambda: evaluator.evaluated_at is not None, timeout=10)
        run.cancel()
        tick.cancel()
        return turns

    assert series >= 10 * INGEST_SLICE
    assert asyncio.run(drive()) >= series // INGEST_SLICE
