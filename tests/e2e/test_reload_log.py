"""A reload logs what changed, in mesh.yaml's words, from the running runtime's own tables."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.runtime_harness import backend, build_dist, run_dist, spec
from tests.polling import eventually

ALERT = """\
monitoring:
  alerts:
    - {{name: reviews-errors, service: reviews, when: "error_rate > {}", for: 1m, severity: page}}
"""


def _mesh(endpoints: dict[str, str], weights: tuple[int, int], threshold: str) -> str:
    """Service reviews with ``{address: version}`` endpoints, a v1/v2 split and one alert."""
    eps = ", ".join(f'{{address: "{a}", labels: {{version: {v}}}}}' for a, v in endpoints.items())
    return spec(
        f"""\
        services:
          reviews:
            discovery: {{static: [{eps}]}}
            subsets: {{v1: {{labels: {{version: v1}}}}, v2: {{labels: {{version: v2}}}}}}
        routes:
          - name: reviews-split
            match: {{host: reviews}}
            to:
              - {{service: reviews, subset: v1, weight: {weights[0]}}}
              - {{service: reviews, subset: v2, weight: {weights[1]}}}
        """
    ) + ALERT.format(threshold)


def _wait_for(log: Path, text: str) -> str:
    """The log once it holds ``text``."""

    def holding() -> str:
        content = log.read_text(errors="replace")
        return content if text in content else ""

    return eventually(
        holding,
        what=f"{text!r} in the log",
        context=lambda: log.read_text()[-3000:],
    )


def _reload_lines(log: str) -> list[str]:
    return [line.split("reload: ", 1)[1] for line in log.splitlines() if "reload: " in line]


def test_sighup_logs_each_change_and_a_count(tmp_path: Path) -> None:
    """Weights, an alert threshold and a new endpoint show up as lines after `reloaded`;
    a reload of the same DIST says "no changes"."""
    with backend("v1") as (a, _), backend("v2") as (b, _), backend("v3") as (c, _):
        dist = build_dist(tmp_path / "dist", _mesh({a: "v1", b: "v2"}, (90, 10), "5%"))
        with run_dist(dist) as rt:
            build_dist(dist, _mesh({a: "v1", b: "v2", c: "v2"}, (50, 50), "2%"))
            mark = len(rt.log_text())
            rt.proc.send_signal(signal.SIGHUP)
            log = _wait_for(rt.log, "reload: alert")[mark:]
            assert f"reloaded {dist}: 4 changes" in log
            assert _reload_lines(log) == [
                "route reviews-split: to reviews/v1 weight 90 -> 50",
                "route reviews-split: to reviews/v2 weight 10 -> 50",
                f"service reviews: endpoint {c} added (weight 1, labels {{version: v2}})",
                "alert reviews-errors: threshold 5% -> 2%",
            ]
            status, _, _ = rt.request("GET", "/", "reviews")
            assert status == 200
            mark = len(rt.log_text())
            rt.proc.send_signal(signal.SIGHUP)
            log = _wait_for(rt.log, f"reloaded {dist}: no changes")[mark:]
            assert _reload_lines(log) == []
