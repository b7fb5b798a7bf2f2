"""Metrics: the documented names and labels, text format 0.0.4, histogram buckets, promtool lint."""

from __future__ import annotations

import math
import re
import subprocess
from bisect import bisect_left

from conftest import require_binary

from meshgen.runtime.observe.metrics import (
    LATENCY_BUCKETS,
    Metrics,
    escape_label_value,
    format_value,
)

HOSTILE = 'a"b\\c\nd\u00e9{x="y"}'


def _filled() -> Metrics:
    m = Metrics()
    m.observe_request("edge", "r1", "reviews", "v1", 200, 0.003)
    m.observe_request("edge", "r1", "reviews", "v1", 200, 0.005)  # exactly on a bound: le=0.005
    m.observe_request("edge", "r1", "reviews", "", 503, 42.0)  # above every bound: +Inf only
    m.inc_upstream("reviews", "127.0.0.1:9081", 200)
    m.inc_upstream("reviews", "127.0.0.1:9081", "connect-failure")
    m.set_endpoint_healthy("reviews", "127.0.0.1:9081", True)
    m.set_endpoint_healthy("reviews", "[::1]:9082", False)
    m.inc_retry("reviews")
    m.inc_ejection("reviews", "[::1]:9082")
    m.set_circuit_open("reviews", True)
    m.inc_rate_limited("r1")
    m.inc_denied("edge", HOSTILE, "reviews", "enforce")
    m.set_cert_expiry("reviews", "certs/reviews.pem", 1_900_000_000.5)
    return m


def test_every_spec_metric_has_help_type_and_its_labels() -> None:
    """Each documented family is declared once with HELP and TYPE and carries its label names."""
    text = _filled().render()
    expected = {
        "meshgen_requests_total": ("counter", "listener,route,service,subset,code,grpc_status"),
        "meshgen_request_duration_seconds": ("histogram", "listener,route,service"),
        "meshgen_upstream_requests_total": ("counter", "service,endpoint,code"),
        "meshgen_endpoint_healthy": ("gauge", "service,endpoint"),
        "meshgen_retries_total": ("counter", "service"),
        "meshgen_ejections_total": ("counter", "service,endpoint"),
        "meshgen_circuit_open": ("gauge", "service"),
        "meshgen_rate_limited_total": ("counter", "route"),
        "meshgen_denied_total": ("counter", "listener,from,to,mode"),
        "meshgen_cert_expiry_timestamp_seconds": ("gauge", "service,file"),
    }
    for name, (kind, labels) in expected.items():
        assert text.count(f"# TYPE {name} {kind}\n") == 1, name
        assert f"# HELP {name} " in text
        sample = name + ("_bucket" if kind == "histogram" else "")
        line = next(ln for ln in text.splitlines() if ln.startswith(sample + "{"))
        names = re.findall(r'(\w+)="(?:[^"\\]|\\.)*"', line)
        wanted = labels.split(",") + (["le"] if kind == "histogram" else [])
        assert names == wanted, (name, line)


def test_histogram_is_cumulative_with_inf_sum_and_count() -> None:
    """Buckets are cumulative, ``le`` is inclusive, +Inf equals _count, _sum adds durations."""
    text = _filled().render()
    prefix = 'meshgen_request_duration_seconds_bucket{listener="edge",route="r1",service="reviews"'
    counts = {
        m.group(1): int(m.group(2))
        for m in re.finditer(re.escape(prefix) + r',le="([^"]+)"\} (\d+)', text)
    }
    assert list(counts) == [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]
    assert counts["0.0025"] == 0 and counts["0.005"] == 2 and counts["30.0"] == 2
    assert counts["+Inf"] == 3
    assert f"meshgen_request_duration_seconds_count{prefix[39:]}}} 3" in text
    total = float(re.search(r"meshgen_request_duration_seconds_sum\{[^}]*\} (\S+)", text)[1])
    assert math.isclose(total, 42.008)


def test_a_duration_counts_in_the_first_bucket_whose_bound_is_not_below_it() -> None:
    """Every duration lands where ``bisect_left`` over the bounds puts it: on a bound in that
    bound's bucket (``le`` is inclusive), just past it in the next, past the last in +Inf."""
    for bound in LATENCY_BUCKETS:
        for d in (math.nextafter(bound, 0.0), bound, math.nextafter(bound, math.inf)):
            m = Metrics()
            m.observe_request("edge", "r1", "reviews", "", 200, d)
            counts = m.durations["edge", "r1", "reviews"].counts
            assert counts.index(1) == bisect_left(LATENCY_BUCKETS, d), d
            assert sum(counts) == 1


def test_label_values_are_escaped() -> None:
    """Backslash, quote and newline are escaped; nothing else is touched."""
    assert escape_label_value(HOSTILE) == 'a\\"b\\\\c\\nd\u00e9{x=\\"y\\"}'
    line = next(ln for ln in _filled().render().splitlines() if ln.startswith("meshgen_denied"))
    escaped = escape_label_value(HOSTILE)
    assert line == (
        f'meshgen_denied_total{{listener="edge",from="{escaped}",to="reviews",mode="enforce"}} 1'
    )


def test_values_render_like_client_libraries() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(1_900_000_000.5) == "1900000000.5"
    assert format_value(float("inf")) == "+Inf" and format_value(float("nan")) == "NaN"


def test_collect_matches_render() -> None:
    """``collect()`` (what the alert evaluator reads) holds exactly the rendered samples."""
    m = _filled()
    rendered = {line for line in m.render().splitlines() if line and not line.startswith("#")}
    collected = set()
    for name, rows in m.collect().items():
        for labels, value in rows.items():
            collected.add((name, dict(labels).get("service"),
                           format_value(value)))  # fmt: skip
    assert len(rendered) == sum(len(rows) for rows in m.collect().values())
    for name, service, value in collected:
        assert any(
            ln.startswith(name + "{")
            and ln.endswith(" " + value)
            and (service is None or f'service="{service}"' in ln)
            for ln in rendered
        ), (name, service, value)


def test_promtool_check_metrics_accepts_the_exposition() -> None:
    """The real linter finds nothing to complain about (empty families included)."""
    promtool = require_binary("promtool")
    for metrics in (Metrics(), _filled()):
        result = subprocess.run(
            [promtool, "check", "metrics"], input=metrics.render(), capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_gauges_overwrite_and_forget() -> None:
    m = Metrics()
    m.set_endpoint_healthy("s", "e:1", True)
    m.set_endpoint_healthy("s", "e:1", False)
    assert 'meshgen_endpoint_healthy{service="s",endpoint="e:1"} 0' in m.render()
    m.forget_endpoint("s", "e:1")
    assert 'endpoint="e:1"' not in m.render()


def test_declared_series_start_at_zero_and_can_be_forgotten() -> None:
    """Rare-event series exist at 0 before the first event; declaring again keeps counts."""
    m = Metrics()
    m.declare(["a", "b"], ["r"])
    m.inc_retry("a")
    m.declare(["a"], ["r"])
    text = m.render()
    assert 'meshgen_retries_total{service="a"} 1' in text
    assert 'meshgen_retries_total{service="b"} 0' in text
    assert 'meshgen_circuit_open{service="b"} 0' in text
    assert 'meshgen_rate_limited_total{route="r"} 0' in text
    m.forget_service("b")
    m.forget_route("r")
    text = m.render()
    assert 'service="b"' not in text and 'route="r"' not in text
