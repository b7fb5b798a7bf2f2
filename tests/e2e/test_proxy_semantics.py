"""`python DIST` semantics an audit found wrong or untested.

- Local answers (fault abort, route 429, 403) count under the service the route would have sent
  the request to, so a fault-injected 5xx shows in that service's ``error_rate``.
- Circuit breaker: with every connection busy, up to ``max_pending_requests`` requests wait
  (FIFO) for one; only the rest get a fast 503 with ``x-meshgen-overloaded: true``.
- A request body is retried only while it fits the 64 KiB replay buffer.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from runtime_harness import (
    SERVE_HANDLER,
    Runtime,
    backend,
    build_dist,
    run_dist,
    script_backend,
    spec,
)

pytestmark = pytest.mark.e2e

_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(rt: Runtime, name: str) -> list[tuple[dict[str, str], float]]:
    """Every series of metric ``name`` on ``/metrics``: (labels, value)."""
    out: list[tuple[dict[str, str], float]] = []
    for line in rt.admin("/metrics").splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            out.append((dict(_LABEL.findall(m.group(2))), float(m.group(3))))
    return out


def count(rt: Runtime, name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels``."""
    return sum(v for lab, v in samples(rt, name) if all(lab.get(k) == x for k, x in labels.items()))


# --- attribution of local answers ---------------------------------------------------------


@pytest.fixture(scope="module")
def attribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with backend("a") as (a, _), backend("b") as (b, _):
        text = spec(
            f"""
            services:
              x:
                discovery: {{static: [{{address: "{a}", labels: {{v: "1"}}}}]}}
                subsets: {{v1: {{labels: {{v: "1"}}}}}}
              y:
                discovery: {{static: [{{address: "{b}"}}]}}
            routes:
              - name: aborted
                match: {{host: x, path_prefix: /abort}}
                to: [{{service: x, subset: v1}}]
                fault: {{abort: {{status: 503, percent: 100}}}}
              - name: split-abort
                match: {{host: x, path_prefix: /split}}
                to: [{{service: x, weight: 50}}, {{service: y, weight: 50}}]
                fault: {{abort: {{status: 500, percent: 100}}}}
              - name: limited
                match: {{host: x, path_prefix: /limited}}
                to: [{{service: y}}]
                rate_limit: {{requests_per_second: 0.001, burst: 1}}
              - name: x
                match: {{host: x}}
                to: [{{service: x}}]
            """
        )
        dist = build_dist(tmp_path_factory.mktemp("attr") / "dist", text)
        with run_dist(dist) as rt:
            yield rt


def test_fault_abort_counts_under_the_routes_service(attribution: Runtime) -> None:
    """A fault-injected 503 on a route to x is x's 5xx (and its subset's), latency included."""
    for _ in range(3):
        assert attribution.request("GET", "/abort", "x")[0] == 503
    assert (
        count(
            attribution,
            "meshgen_requests_total",
            route="aborted",
            service="x",
            subset="v1",
            code="503",
        )
        == 3
    )
    assert count(attribution, "meshgen_requests_total", route="aborted", service="") == 0
    assert (
        count(attribution, "meshgen_request_duration_seconds_count", route="aborted", service="x")
        == 3
    )


def test_split_abort_lands_on_the_chosen_destination(attribution: Runtime) -> None:
    """On a split, the weighted choice is made first; each abort counts under its pick."""
    n = 40
    for _ in range(n):
        assert attribution.request("GET", "/split", "x")[0] == 500
    on_x = count(attribution, "meshgen_requests_total", route="split-abort", service="x")
    on_y = count(attribution, "meshgen_requests_total", route="split-abort", service="y")
    assert on_x + on_y == n
    assert on_x > 5 and on_y > 5  # both destinations are chosen (50/50, 40 tries)


def test_route_rate_limit_and_no_route(attribution: Runtime) -> None:
    """A route-bucket 429 counts under the route's service; a 404 has no service."""
    codes = [attribution.request("GET", "/limited", "x")[0] for _ in range(3)]
    assert codes == [200, 429, 429]
    assert count(attribution, "meshgen_requests_total", route="limited", service="y") == 3
    assert (
        count(attribution, "meshgen_requests_total", route="limited", service="y", code="429") == 2
    )
    assert attribution.request("GET", "/", "nowhere")[0] == 404
    assert count(attribution, "meshgen_requests_total", code="404", service="") == 1


# --- circuit breaker: pending queue ---------------------------------------------------------


def _concurrent(
    rt: Runtime, host: str, n: int, headers: dict[str, str]
) -> list[tuple[int, dict[str, str]]]:
    """``n`` requests to ``host`` at once (each on its own connection): (status, headers)."""
    results: list[tuple[int, dict[str, str]]] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def one() -> None:
        start.wait(5)
        status, hdrs, _ = rt.request("GET", "/", host, headers)
        with lock:
            results.append((status, hdrs))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


@pytest.fixture(scope="module")
def breaker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with backend("slow") as (addr, _), backend("other") as (other, _):
        limits = "{max_connections: 1, max_pending_requests: 1, max_requests: 1}"
        text = spec(
            f"""
            services:
              slow:
                discovery: {{static: [{{address: "{addr}"}}]}}
                circuit_breaker: {limits}
                timeout: 5s
              tight:
                discovery: {{static: [{{address: "{addr}"}}]}}
                circuit_breaker: {limits}
                timeout: 1s
              pair:
                discovery: {{static: [{{address: "{addr}"}}, {{address: "{other}"}}]}}
                circuit_breaker: {limits}
            routes:
              - name: slow
                match: {{host: slow}}
                to: [{{service: slow}}]
              - name: tight
                match: {{host: tight}}
                to: [{{service: tight}}]
              - name: pair
                match: {{host: pair}}
                to: [{{service: pair}}]
            """
        )
        dist = build_dist(tmp_path_factory.mktemp("cb") / "dist", text)
        with run_dist(dist) as rt:
            yield rt


def test_pending_request_waits_for_the_busy_connection(breaker: Runtime) -> None:
    """1 connection busy, 1 request queued and then served, the other 2 refused at once."""
    got = _concurrent(breaker, "slow", 4, {"x-delay": "1"})  # all four arrive within 1 s
    assert sorted(s for s, _ in got) == [200, 200, 503, 503]
    for status, hdrs in got:
        assert (hdrs.get("x-meshgen-overloaded") == "true") == (status == 503)
    assert count(breaker, "meshgen_requests_total", service="slow", code="503") == 2
    assert count(breaker, "meshgen_circuit_open", service="slow") == 0  # all released
    # Served one after the other on the single connection, then the service is free again.
    assert breaker.request("GET", "/", "slow")[0] == 200


def test_circuit_open_gauge_while_saturated(breaker: Runtime) -> None:
    """meshgen_circuit_open{service} is 1 while the limit is reached, 0 afterwards."""
    done = threading.Event()

    def hold() -> None:
        breaker.request("GET", "/", "slow", {"x-delay": "0.6"})
        done.set()

    t = threading.Thread(target=hold)
    t.start()
    seen = 0.0
    while not done.is_set() and seen == 0:
        seen = count(breaker, "meshgen_circuit_open", service="slow")
    t.join(10)
    assert seen == 1
    assert count(breaker, "meshgen_circuit_open", service="slow") == 0


def test_pending_wait_is_bounded_by_the_request_timeout(breaker: Runtime) -> None:
    """A queued request whose timeout passes before a connection frees gets 504. (The three
    must all arrive within the 1 s timeout: with 250 ms a loaded CI machine spread them wider,
    the first one's 504 freed the slots, and the third was queued instead of refused.)"""
    got = _concurrent(breaker, "tight", 3, {"x-delay": "3"})
    assert sorted(s for s, _ in got) == [503, 504, 504]


def test_connection_cap_closes_an_idle_connection_to_make_room(breaker: Runtime) -> None:
    """max_connections 1 over two endpoints: the idle connection to one endpoint is closed so
    the next request can open one to the other (no refusal for sequential traffic)."""
    got = [breaker.request("GET", "/", "pair")[1].get("x-backend", "") for _ in range(4)]
    assert sorted(got) == ["other", "other", "slow", "slow"]


# --- retry of request bodies ---------------------------------------------------------------

FLAKY = (
    """
import hashlib, http.server, sys
seen = {}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        n = seen[self.path] = seen.get(self.path, 0) + 1
        out = ("%d %d %s" % (n, len(body), hashlib.sha256(body).hexdigest())).encode()
        self.send_response(503 if n == 1 else 200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a): pass
"""
    + SERVE_HANDLER
)


@contextmanager
def flaky_backend() -> Iterator[str]:
    """Answers the first POST to each path with 503, later ones with 200 "n len sha256"."""
    with script_backend(FLAKY) as (address, _):
        yield address


@pytest.fixture(scope="module")
def retrying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with flaky_backend() as addr:
        text = spec(
            f"""
            services:
              flaky:
                discovery: {{static: [{{address: "{addr}"}}]}}
                retries:
                  attempts: 2
                  on: [5xx]
                  idempotent_only: false
                  backoff: {{base: 1ms, max: 2ms}}
            """
        )
        dist = build_dist(Path(tmp_path_factory.mktemp("retry")) / "dist", text)
        with run_dist(dist) as rt:
            yield rt


def test_small_post_body_is_retried_whole(retrying: Runtime) -> None:
    """A 10 KiB POST that meets a 503 is resent, byte for byte, and succeeds."""
    body = bytes(range(256)) * 40
    status, _, out = retrying.request("POST", "/small", "flaky", body=body)
    assert status == 200
    assert out.decode() == f"2 {len(body)} {hashlib.sha256(body).hexdigest()}"
    assert count(retrying, "meshgen_retries_total", service="flaky") == 1


def test_post_body_over_the_replay_buffer_is_not_retried(retrying: Runtime) -> None:
    """A 100 KiB POST cannot be replayed: the client gets the backend's 503."""
    before = count(retrying, "meshgen_retries_total", service="flaky")
    body = bytes(range(256)) * 400
    status, _, out = retrying.request("POST", "/large", "flaky", body=body)
    assert status == 503
    assert out.decode() == f"1 {len(body)} {hashlib.sha256(body).hexdigest()}"
    assert count(retrying, "meshgen_retries_total", service="flaky") == before
