"""The request machine on gRPC requests: trailers-only local answers, grpc-timeout, retries on
trailers-only statuses and refused streams, the ``grpc_status`` metric label."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.forward import attempt as A
from meshgen.runtime.policy import grpc
from meshgen.runtime.policy.resilience import retryable
from meshgen.runtime.tables import Fault, RateLimit, RetryPolicy
from tests.unit.test_attempt import Req, World, cluster, route, target

GRPC_ON = ("unavailable", "refused-stream")
GRPC_RETRY = RetryPolicy(attempts=2, per_try_timeout_s=1.0, on=GRPC_ON, budget_min_per_second=100)


def grpc_req(timeout: bytes | None = None, **kw: object) -> Req:
    headers = [(b"content-type", b"application/grpc+proto"), (b"te", b"trailers")]
    if timeout is not None:
        headers.append((b"grpc-timeout", timeout))
    kw.setdefault("method", "POST")
    kw.setdefault("target", b"/shop.Cart/Add")
    return Req(headers=headers, **kw)  # type: ignore[arg-type]


def world(retries: RetryPolicy | None = GRPC_RETRY, **route_kw: object) -> World:
    route_kw.setdefault("to", (target(retries),))
    return World(routes=(route(**route_kw),))


def trailers(att: A.Attempt) -> dict[bytes, bytes]:
    assert att.answer is not None and att.answer.status == 200 and att.answer.body == b""
    return dict(att.answer.headers)


def test_no_route_is_unimplemented_trailers_only() -> None:
    w = world()
    att = w.attempt(grpc_req(host="elsewhere"))
    assert att.step(A.START) == A.LOCAL
    headers = trailers(att)
    assert headers[b"grpc-status"] == b"12" and headers[b"content-type"] == b"application/grpc"
    assert headers[b"grpc-message"].startswith(b"no route for host")
    att.account(0.0)
    assert w.counted("meshgen_requests_total", code="200", grpc_status="12") == 1


def test_access_denied_is_permission_denied() -> None:
    w = World(enforce=True)
    att = w.attempt(grpc_req(), caller="intruder")
    assert att.step(A.START) == A.LOCAL
    assert trailers(att)[b"grpc-status"] == b"7"
    assert w.counted("meshgen_denied_total") == 1


def test_rate_limited_is_resource_exhausted() -> None:
    w = world(rate_limit=RateLimit(0.5, 1))
    assert w.attempt(grpc_req()).step(A.START) == A.TRY
    att = w.attempt(grpc_req())
    assert att.step(A.START) == A.LOCAL
    headers = trailers(att)
    assert headers[b"grpc-status"] == b"8" and headers[b"retry-after"] == b"2"


def test_no_endpoint_is_unavailable_and_a_timeout_deadline_exceeded() -> None:
    w = World(routes=(route(to=(target(None),)),), clusters=(cluster(ports=()),))
    att = w.attempt(grpc_req())
    assert att.step(A.START) == A.LOCAL and trailers(att)[b"grpc-status"] == b"14"
    w = world(None)
    att = w.attempt(grpc_req())
    assert att.step(A.START) == A.TRY
    assert att.step(A.FAILED, "timeout") == A.LOCAL and trailers(att)[b"grpc-status"] == b"4"
    att.account(0.1)
    assert w.counted("meshgen_requests_total", code="200", grpc_status="4") == 1


def test_a_request_that_is_not_grpc_keeps_http_answers_and_an_empty_label() -> None:
    w = world(None)
    att = w.attempt(Req(method="POST", headers=[(b"content-type", b"application/grpc-web")]))
    assert att.step(A.START) == A.TRY and att.step(A.FAILED, "timeout") == A.LOCAL
    assert att.answer is not None and att.answer.status == 504
    att.account(0.1)
    assert w.counted("meshgen_requests_total", code="504", grpc_status="") == 1


def test_grpc_timeout_caps_the_route_timeout_and_is_passed_on_reduced() -> None:
    policy = RetryPolicy(attempts=2, per_try_timeout_s=10.0, on=GRPC_ON)
    w = world(policy, fault=Fault(delay_s=0.1, delay_percent=100))
    att = w.attempt(grpc_req(b"300m"))
    assert att.step(A.START) == A.DELAY
    w.clock.now += 0.1  # time spent in the proxy before the try
    assert att.step(A.WOKE) == A.TRY
    assert att.deadline == pytest.approx(1000.3)  # not the route's 5s
    assert att.per_try == pytest.approx(0.2)
    assert b"\r\ngrpc-timeout: 200000u\r\n" in att.head  # the caller's 300m, less 100ms
    assert att.head.count(b"grpc-timeout") == 1


def test_a_longer_grpc_timeout_leaves_the_route_timeout_in_charge() -> None:
    att = world(None).attempt(grpc_req(b"1H"))
    assert att.step(A.START) == A.TRY
    assert att.per_try == 5.0 and b"grpc-timeout: 5000000u\r\n" in att.head


def test_a_malformed_grpc_timeout_is_ignored_and_passed_on_as_sent() -> None:
    att = world(None).attempt(grpc_req(b"soon"))
    assert att.step(A.START) == A.TRY
    assert att.per_try == 5.0 and b"grpc-timeout: soon\r\n" in att.head


def test_a_trailers_only_unavailable_is_retried_even_with_idempotent_only() -> None:
    w = world()
    assert GRPC_RETRY.idempotent_only
    att = w.attempt(grpc_req())
    assert att.step(A.START) == A.TRY
    first = att.address
    att.grpc_status = 14  # the driver read it from a head that ended the stream
    assert att.step(A.HEAD, 200) == A.BACKOFF
    assert att.grpc_status == -1  # the next try's own
    assert att.step(A.WOKE) == A.TRY and att.address != first
    att.grpc_status = 0
    assert att.step(A.HEAD, 200) == A.RESPOND and att.step(A.STREAMED) == A.DONE
    att.account(0.01)
    assert w.counted("meshgen_retries_total", service="api") == 1
    assert w.counted("meshgen_requests_total", code="200", grpc_status="0") == 1


def test_a_status_the_conditions_do_not_name_is_passed_on() -> None:
    w = world()
    att = w.attempt(grpc_req())
    assert att.step(A.START) == A.TRY
    att.grpc_status = 13  # INTERNAL: not in `on`
    assert att.step(A.HEAD, 200) == A.RESPOND and att.step(A.STREAMED) == A.DONE
    att.account(0.01)
    assert w.counted("meshgen_requests_total", grpc_status="13") == 1
    assert w.counted("meshgen_retries_total") == 0


def test_a_refused_stream_is_retried() -> None:
    att = world().attempt(grpc_req())
    assert att.step(A.START) == A.TRY
    assert att.step(A.FAILED, "refused-stream") == A.BACKOFF


def test_a_plain_post_is_not_retried_under_idempotent_only() -> None:
    policy = RetryPolicy(attempts=2, per_try_timeout_s=1.0, on=("5xx",))
    att = world(policy).attempt(Req(method="POST"))
    assert att.step(A.START) == A.TRY and att.step(A.HEAD, 503) == A.RESPOND
    att = world(policy).attempt(grpc_req())
    assert att.step(A.START) == A.TRY and att.step(A.HEAD, 503) == A.BACKOFF


def test_a_response_without_grpc_status_is_labelled_by_its_http_status() -> None:
    w = world(None)
    att = w.attempt(grpc_req())
    assert att.step(A.START) == A.TRY and att.step(A.HEAD, 503) == A.RESPOND
    att.step(A.STREAMED)
    att.account(0.01)
    assert w.counted("meshgen_requests_total", code="503", grpc_status="14") == 1
    assert grpc.is_error("503", "14")


def test_grpc_over_http1_is_a_clear_error_not_a_hang() -> None:
    w = world()
    req = grpc_req()
    req.version = "1.1"  # type: ignore[attr-defined]
    att = w.attempt(req)
    assert att.step(A.START) == A.LOCAL
    headers = trailers(att)
    assert headers[b"grpc-status"] == b"13" and b"HTTP/2" in headers[b"grpc-message"]
    assert w.gen.breakers["api"].requests == 0  # nothing was forwarded


GRPC_CONDITIONS = ["unavailable", "internal", "cancelled", "refused-stream", "reset", "5xx"]
GRPC_OUTCOMES = st.one_of(
    st.tuples(st.just(200), st.sampled_from([-1, 0, 1, 4, 8, 13, 14])),  # status, grpc-status
    st.tuples(st.sampled_from([503, 502]), st.just(-1)),
    st.tuples(st.sampled_from(["refused-stream", "reset", "connect-failure"]), st.just(-1)),
)


@given(
    outcomes=st.lists(GRPC_OUTCOMES, min_size=1, max_size=10),
    attempts=st.integers(0, 3),
    on=st.sets(st.sampled_from(GRPC_CONDITIONS), min_size=1),
)
def test_any_grpc_outcome_sequence_ends_once_and_is_labelled(
    outcomes: list[tuple[int | str, int]], attempts: int, on: set[str]
) -> None:
    """Whatever the endpoints answer: at most 1 + attempts tries, a retry only when the
    outcome meets a condition, everything given back, and the request counted once with the
    grpc-status the caller got (a passed-on trailers-only status, or the machine's own)."""
    policy = RetryPolicy(attempts, 1.0, tuple(sorted(on)), budget_min_per_second=100)  # type: ignore[arg-type]
    w = world(policy)
    att = w.attempt(grpc_req())
    action = att.step(A.START)
    feed = iter(outcomes)
    while action not in (A.LOCAL, A.DONE):
        if action == A.TRY:
            result, status = next(feed, (200, 0))
            att.grpc_status = status if isinstance(result, int) else -1
            before = att.tries
            action = att.step(A.HEAD if isinstance(result, int) else A.FAILED, result)
            if action == A.BACKOFF:  # retried: the outcome met one of `on`
                met = (
                    retryable(policy, "POST", result, True, status)
                    if isinstance(result, int)
                    else retryable(policy, "POST", result, True)
                )
                assert met and before <= attempts
        elif action == A.BACKOFF:
            w.clock.now += att.delay
            action = att.step(A.WOKE)
        elif action == A.RESPOND:
            action = att.step(A.STREAMED)
    assert att.tries <= 1 + attempts and att.state == A.ENDED
    assert w.gen.breakers["api"].requests == 0 and w.in_flight() == 0
    att.account(0.01)
    label = grpc.status_label(att.status, att.grpc_status)
    assert w.counted("meshgen_requests_total", grpc_status=label) == 1
    if att.answer is not None:  # the machine's own answer: trailers-only, HTTP 200
        assert att.answer.status == 200 and label != ""


@given(
    st.one_of(
        st.text(st.characters(max_codepoint=255), max_size=30),  # header values: latin-1
        st.builds(
            lambda base, tail: base + tail,
            st.sampled_from(["application/grpc", "APPLICATION/GRPC", "application/grpc-web"]),
            st.text(alphabet="+;-=a bcjson", max_size=8),
        ),
    )
)
def test_the_engines_content_type_rules_agree_with_the_runtimes(content_type: str) -> None:
    """HAProxy's ACL regex and Envoy's RE2 matcher are written from ``is_grpc``: they must
    say the same for any content-type."""
    from meshgen.targets.envoy_routes import GRPC_CONTENT_TYPE
    from meshgen.targets.haproxy import GRPC_CONTENT_TYPE as HAPROXY

    envoy = GRPC_CONTENT_TYPE["string_match"]["safe_regex"]["regex"]
    assert isinstance(envoy, str)
    expected = grpc.is_grpc(content_type)
    if "\n" not in content_type:
        assert (re.search(HAPROXY, content_type, re.I) is not None) is expected
    assert (re.fullmatch(envoy, content_type, re.S) is not None) is expected
