"""status_model: an endpoint's verdict comes from every signal, recent tries from live counters."""

from __future__ import annotations

import pytest

from meshgen.runtime.observe.alert_signals import UPSTREAM
from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.observe.status_model import EndpointView, recent_outcomes
from meshgen.runtime.observe.timeseries import Store

NOW = 1_700_000_000.0


def _view(health: str = "unchecked", ejected: bool = False, tries: int = 0,
          failures: dict[str, int] | None = None) -> EndpointView:  # fmt: skip
    return EndpointView("127.0.0.1:1", None, 1, {}, health, ejected, 0, tries, failures or {})


@pytest.mark.parametrize(
    ("view", "verdict"),
    [
        (_view(), "unknown"),  # no check, no traffic: nothing is claimed
        (_view("passing"), "healthy"),
        (_view("failing"), "failing"),
        (_view("passing", ejected=True), "failing"),
        (_view(tries=3, failures={"connect-failure": 3}), "failing"),  # refuses connections
        (_view("passing", tries=3, failures={"connect-failure": 3}), "failing"),
        (_view(tries=4, failures={"503": 1}), "degraded"),
        (_view(tries=4), "healthy"),
    ],
)
def test_verdict_combines_every_signal(view: EndpointView, verdict: str) -> None:
    assert view.verdict == verdict


def _store(points: list[tuple[float, float]], code: str = "connect-failure") -> Store:
    store = Store(lambda name, service: 300.0)
    labels = (("code", code), ("endpoint", "e:1"), ("service", "svc"))
    for t, v in points:
        store.ingest(t, {UPSTREAM: {labels: v}})
    return store


def test_recent_tries_are_live_counters_minus_the_window_start() -> None:
    """A series older than the window: what happened since its sample at the window start."""
    metrics = Metrics()
    for _ in range(10):
        metrics.inc_upstream("svc", "e:1", "connect-failure")
    store = _store([(NOW - 300 + 5, 7.0), (NOW - 150, 8.0)])
    assert recent_outcomes(store, metrics, "svc", NOW) == {"e:1": {"connect-failure": 3}}


def test_a_series_born_in_the_window_counts_from_zero() -> None:
    """Its first kept sample is late in the window: counters start at 0, nothing is lost."""
    metrics = Metrics()
    for _ in range(5):
        metrics.inc_upstream("svc", "e:1", "connect-failure")
    store = _store([(NOW - 60, 4.0)])
    assert recent_outcomes(store, metrics, "svc", NOW) == {"e:1": {"connect-failure": 5}}
    assert recent_outcomes(None, metrics, "svc", NOW) == {"e:1": {"connect-failure": 5}}
    assert recent_outcomes(None, metrics, "other", NOW) == {}
