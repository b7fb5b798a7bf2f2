"""Monitoring costs: Metrics hot-path calls, /metrics rendering, one evaluator step.

Run: ``PYTHONPATH=. python bench/monitoring.py`` (about 6 minutes: it simulates 3 days of
15 s evaluations). Prints ns per hot-path call, render time for a
realistic series count, and the evaluator's step time with full 3-day SLO history.
"""

from __future__ import annotations

import time
import timeit

from meshgen.runtime.observe.alerts import AlertEvaluator
from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.tables import Alert, BurnWindow, Slo


def main() -> None:
    m = Metrics()
    n = 1_000_000
    per = timeit.timeit(
        lambda: m.observe_request("edge", "reviews", "reviews", "v1", 200, 0.0123), number=n
    )
    print(f"observe_request: {per / n * 1e9:.0f} ns/call")
    per = timeit.timeit(lambda: m.inc_upstream("reviews", "127.0.0.1:9081", 200), number=n)
    print(f"inc_upstream:    {per / n * 1e9:.0f} ns/call")
    for s in range(20):
        for r in range(5):
            for code in (200, 404, 500, 503):
                m.observe_request("edge", f"r{r}", f"svc{s}", "", code, 0.01 * code / 200)
        for e in range(5):
            m.set_endpoint_healthy(f"svc{s}", f"10.0.0.{e}:80", True)
    series = sum(len(v) for v in m.collect().values())
    per = timeit.timeit(m.render, number=50) / 50
    print(f"render:          {per * 1e3:.1f} ms for {series} series")

    slos = [Slo(f"svc{s}-avail", f"svc{s}", 99.9, 30 * 86400.0,
                (BurnWindow(3600, 300, 14.4), BurnWindow(21600, 1800, 6.0)),
                (BurnWindow(86400, 7200, 3.0), BurnWindow(259200, 21600, 1.0)))
            for s in range(20)]  # fmt: skip
    alerts = [Alert(f"svc{s}-p99", f"svc{s}", "p99_latency", ">", 0.5, 60.0, "page")
              for s in range(20)]  # fmt: skip
    ev = AlertEvaluator(alerts, slos)
    steps = 3 * 86400 // 15
    t0 = time.perf_counter()
    for k in range(steps):
        m.observe_request("edge", "r0", f"svc{k % 20}", "", 200, 0.01)
        ev.step(k * 15.0, m.collect())
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev.step(steps * 15.0, m.collect())
    last = time.perf_counter() - t1
    print(f"evaluator:       {total / steps * 1e3:.2f} ms/step average over 3 days of steps, "
          f"{last * 1e3:.2f} ms at full history ({len(alerts) + 2 * len(slos)} rules, "
          f"{series} series)")  # fmt: skip


if __name__ == "__main__":
    main()
