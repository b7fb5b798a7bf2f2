"""The request state machine (``forward/attempt.py``): events in, actions out, a fake clock, no I/O.

Each test builds real tables, a real ``Generation`` (breakers, budgets, buckets, routers,
upstreams) on a fake clock and a seeded rng, and drives one :class:`Attempt` by hand the way a
driver does, then checks the action it asked for, what it counted and what it gave back.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.forward import attempt as A
from meshgen.runtime.forward.attempt import Attempt, StepError
from meshgen.runtime.forward.generation import Generation
from meshgen.runtime.forward.tries import wait_for_slot
from meshgen.runtime.observe.metrics import Metrics
from meshgen.runtime.tables import (
    CircuitBreaker,
    Cluster,
    Endpoint,
    Fault,
    HeaderMatch,
    Listener,
    LoadBalancer,
    Match,
    MeshInfo,
    Mirror,
    OutlierDetection,
    RateLimit,
    Redirect,
    RetryPolicy,
    Route,
    ServerTls,
    StaticDiscovery,
    Tables,
    Target,
)
from meshgen.runtime.upstream.upstreams import Upstreams

EP1, EP2, EP3 = "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"
RETRY = RetryPolicy(attempts=2, per_try_timeout_s=1.0, on=("5xx",), budget_min_per_second=100)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Conn:
    client_ip: str = "10.0.0.7"
    closed: bool = False
    peer_cert: object = None
    forwarded: bytes | None = None


@dataclass
class Body:
    complete: bool = True
    ended_at: float = 1000.0
    replayable: bool = True


@dataclass
class Req:
    """A request as a driver hands it over (``http1.Request`` has the same attributes)."""

    method: str = "GET"
    host: str = "api"
    target: bytes = b"/items?x=1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    request_id: bytes | None = None
    body: Body | None = None
    conn: Conn = field(default_factory=Conn)
    conn_tokens: frozenset[bytes] = frozenset()
    xff: bytes | None = None
    via: bytes | None = None
    chunked: bool = False
    content_length: int = -1
    upgrade: bool = False

    def header(self, name: str) -> str | None:
        key = name.encode()
        return next((v.decode() for k, v in self.headers if k == key), None)


def cluster(
    name: str = "api", ports: tuple[int, ...] = (9001, 9002, 9003), **kw: object
) -> Cluster:
    eps = tuple(Endpoint("127.0.0.1", p) for p in ports)
    return Cluster(name, StaticDiscovery(eps), **kw)  # type: ignore[arg-type]


def target(retries: RetryPolicy | None = RETRY, timeout: float = 5.0, **kw: object) -> Target:
    args: dict[str, object] = {"service": "api", "subset": None, "weight": 100}
    args.update(timeout_s=timeout, idle_timeout_s=60.0, retries=retries, **kw)
    return Target(**args)  # type: ignore[arg-type]


def route(name: str = "r", **kw: object) -> Route:
    kw.setdefault("to", (target(),))
    return Route(name, Match(hosts=("api",), path="/"), **kw)  # type: ignore[arg-type]


class World:
    """Tables -> Generation on a fake clock; ``attempt()`` makes a request's machine."""

    def __init__(
        self,
        routes: tuple[Route, ...] | None = None,
        clusters: tuple[Cluster, ...] | None = None,
        outlier: dict[str, OutlierDetection] | None = None,
        enforce: bool = False,
    ) -> None:
        tls = ServerTls("c.pem", "k.pem", "ca.pem", "required") if enforce else None
        routes = routes if routes is not None else (route(),)
        self.tables = Tables(
            mesh=MeshInfo("shop", "mesh.test"),
            clusters=clusters if clusters is not None else (cluster(),),
            routes=routes,
            listeners=(Listener("edge", "127.0.0.1", 0, tuple(r.name for r in routes), tls),),
            outlier_detection=outlier or {},
        )
        self.clock = Clock()
        self.metrics = Metrics()
        self.upstreams = Upstreams(
            self.tables, metrics=self.metrics, clock=self.clock, rng=random.Random(1)
        )
        self.gen = Generation(
            self.tables, self.upstreams, self.metrics, None, random.Random(7), self.clock
        )

    def attempt(self, req: Req | None = None, caller: str | None = None) -> Attempt:
        return Attempt(self.gen, "edge", req or Req(), caller)  # type: ignore[arg-type]

    def counted(self, family: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics.render().splitlines():
            if line.startswith(family + "{") and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def in_flight(self) -> int:
        return sum(e["in_flight"] for e in self.upstreams.snapshot()["api"]["endpoints"])


def finish(att: Attempt, status: int = 200) -> int:
    """Drive a TRY to a response with ``status`` that is passed on; returns the last action."""
    action = att.step(A.HEAD, status)
    if action == A.RESPOND:
        action = att.step(A.STREAMED)
    return action


# ---- the table itself ------------------------------------------------------------------


def test_every_state_event_pair_outside_the_table_raises() -> None:
    """A driver bug cannot skip a decision: any event a state does not accept is an error."""
    world = World()
    for state in range(len(A.STATE_NAMES)):
        for event in range(len(A.EVENT_NAMES)):
            att = world.attempt()
            att.state = state
            if (state, event) in A.TRANSITIONS:
                continue
            with pytest.raises(StepError, match=A.EVENT_NAMES[event]):
                att.step(event)
    assert not any(s == A.ENDED for s, _ in A.TRANSITIONS)


def test_a_simple_request_tries_responds_and_gives_everything_back() -> None:
    world = World()
    req = Req()
    att = world.attempt(req)
    assert att.step(A.START) == A.TRY
    assert att.picked is not None and att.address == EP1
    assert att.per_try == 1.0  # min(per_try_timeout, timeout)
    assert (att.path, att.query) == ("/items", "?x=1")
    assert req.request_id is not None and (b"x-request-id", req.request_id) in req.headers
    assert world.gen.breakers["api"].requests == 1 and world.in_flight() == 1
    assert att.step(A.HEAD, 200) == A.RESPOND
    assert world.in_flight() == 1  # held while the body streams
    assert att.step(A.STREAMED) == A.DONE
    assert att.status == 200 and att.answer is None
    assert world.gen.breakers["api"].requests == 0 and world.in_flight() == 0
    att.account(0.01)
    assert world.counted("meshgen_requests_total", route="r", service="api", code="200") == 1
    assert world.counted("meshgen_upstream_requests_total", endpoint=EP1, code="200") == 1


def test_the_callers_request_id_is_kept() -> None:
    req = Req(headers=[(b"x-request-id", b"abc")], request_id=b"abc")
    World().attempt(req).step(A.START)
    assert req.headers == [(b"x-request-id", b"abc")]


# ---- local answers before any try --------------------------------------------------------


def test_a_target_that_does_not_normalise_is_400_and_closes() -> None:
    att = World().attempt(Req(target=b"/a b"))
    assert att.step(A.START) == A.LOCAL
    assert att.answer == A.BAD_TARGET and att.answer.close and att.route is None


def test_no_route_is_404_counted_without_a_route() -> None:
    world = World()
    att = world.attempt(Req(host="elsewhere"))
    assert att.step(A.START) == A.LOCAL
    assert att.answer is not None and att.answer.status == 404 and b"elsewhere" in att.answer.body
    att.account(0.0)
    assert world.counted("meshgen_requests_total", route="", service="", code="404") == 1


def test_a_redirect_answers_even_an_anonymous_caller_on_an_enforcing_listener() -> None:
    world = World(routes=(route("moved", to=(), redirect=Redirect("https://x/", 308)),),
                  enforce=True)  # fmt: skip
    att = world.attempt()
    assert att.step(A.START) == A.LOCAL
    assert att.answer == A.Answer(308, b"", ((b"location", b"https://x/"),))
    assert world.counted("meshgen_denied_total") == 0


def test_access_denied_is_403_and_counted_under_the_service() -> None:
    world = World(enforce=True)
    att = world.attempt(caller="intruder")
    assert att.step(A.START) == A.LOCAL and att.answer == A.DENIED
    assert world.counted("meshgen_denied_total", listener="edge", **{"from": "intruder"}) == 1
    assert world.gen.breakers["api"].requests == 0


def test_route_rate_limit_is_429_with_retry_after() -> None:
    world = World(routes=(route(rate_limit=RateLimit(0.5, 1)),))
    assert world.attempt().step(A.START) == A.TRY
    att = world.attempt()
    assert att.step(A.START) == A.LOCAL
    assert att.answer is not None and att.answer.status == 429
    assert dict(att.answer.headers) == {b"retry-after": b"2"}
    assert world.counted("meshgen_rate_limited_total", route="r") == 1


def test_service_rate_limit_is_checked_after_the_fault_delay() -> None:
    world = World(
        routes=(route(fault=Fault(delay_s=0.5, delay_percent=100)),),
        clusters=(cluster(rate_limit=RateLimit(0.0, 1)),),
    )
    first = world.attempt()
    assert first.step(A.START) == A.DELAY and first.step(A.WOKE) == A.TRY  # the one token
    att = world.attempt()
    assert att.step(A.START) == A.DELAY and att.delay == 0.5
    assert att.step(A.WOKE) == A.LOCAL
    assert att.answer is not None and att.answer.status == 429
    assert dict(att.answer.headers) == {b"retry-after": b"3600"}  # a rate of 0 never refills


def test_fault_abort_answers_the_status() -> None:
    world = World(routes=(route(fault=Fault(abort_status=418, abort_percent=100)),))
    att = world.attempt()
    assert att.step(A.START) == A.LOCAL and att.answer == A.Answer(418, A.FAULT_BODY)
    att.account(0.0)
    assert world.counted("meshgen_requests_total", route="r", service="api", code="418") == 1


def test_mirror_comes_before_the_tries() -> None:
    att = World(routes=(route(mirror=Mirror("api", None, 100.0)),)).attempt()
    assert att.step(A.START) == A.MIRROR and att.mirror == Mirror("api", None, 100.0)
    assert att.step(A.MIRRORED) == A.TRY


def test_ring_hash_key_comes_from_the_request() -> None:
    lb = LoadBalancer(policy="ring_hash", hash_header="x-user")
    world = World(clusters=(cluster(load_balancer=lb),))
    seen = set()
    for _ in range(20):
        att = world.attempt(Req(headers=[(b"x-user", b"jason")]))
        assert att.step(A.START) == A.TRY and att.hash_key == b"jason"
        seen.add(att.address)
        finish(att)
    assert len(seen) == 1


# ---- tries and retries ------------------------------------------------------------------


def test_a_retryable_status_backs_off_then_tries_another_endpoint() -> None:
    world = World()
    att = world.attempt()
    att.step(A.START)
    assert att.step(A.HEAD, 503) == A.BACKOFF
    assert 0 <= att.delay <= RETRY.backoff_base_s and att.exclude == {EP1}
    assert world.gen.breakers["api"].requests == 0 and world.in_flight() == 0  # free meanwhile
    world.clock.now += att.delay
    assert att.step(A.WOKE) == A.TRY and att.address != EP1 and att.tries == 2
    assert finish(att) == A.DONE and att.status == 200
    assert world.counted("meshgen_retries_total", service="api") == 1
    assert world.counted("meshgen_upstream_requests_total", code="503") == 1


def test_the_last_retryable_response_is_passed_on_when_tries_run_out() -> None:
    att = World().attempt()
    att.step(A.START)
    for _ in range(RETRY.attempts):
        assert att.step(A.HEAD, 503) == A.BACKOFF
        assert att.step(A.WOKE) == A.TRY
    assert att.step(A.HEAD, 503) == A.RESPOND and att.status == 503


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("connect-failure", 503), ("timeout", 504), ("reset", 502), ("client-timeout", 408)],
)
def test_a_failed_try_without_retries_is_answered_locally(outcome: str, status: int) -> None:
    world = World(routes=(route(to=(target(retries=None),)),))
    att = world.attempt()
    att.step(A.START)
    assert att.step(A.FAILED, outcome) == A.LOCAL
    assert att.answer == A.FAILURES[outcome] and att.status == status
    assert world.counted("meshgen_upstream_requests_total", code=outcome) == 1
    assert world.gen.breakers["api"].requests == 0 and world.in_flight() == 0


def test_a_stale_connection_is_tried_again_once_for_free() -> None:
    world = World(routes=(route(to=(target(retries=None),)),))
    att = world.attempt()
    att.step(A.START)
    assert att.step(A.FAILED, A.STALE) == A.TRY and att.tries == 1
    assert world.counted("meshgen_upstream_requests_total") == 0  # not counted as a try
    assert world.gen.breakers["api"].requests == 1 and world.in_flight() == 1  # still held
    assert att.step(A.FAILED, A.STALE) == A.LOCAL  # the second time it is a reset
    assert att.status == 502 and world.counted("meshgen_upstream_requests_total", code="reset") == 1


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"method": "POST"}, "not idempotent"),
        ({"body": Body(replayable=False)}, "body cannot be resent"),
        ({"conn": Conn(closed=True)}, "the client is gone"),
    ],
)
def test_no_retry_when(change: dict[str, object], why: str) -> None:
    world = World()
    att = world.attempt(replace(Req(), **change))  # type: ignore[arg-type]
    att.step(A.START)
    assert att.step(A.FAILED, "reset") == A.LOCAL, why
    assert world.counted("meshgen_retries_total", service="api") == 0


def test_no_retry_once_the_deadline_passed() -> None:
    world = World()
    att = world.attempt()
    att.step(A.START)
    world.clock.now += 5.0
    assert att.step(A.HEAD, 503) == A.RESPOND


def test_the_backoff_never_sleeps_past_the_deadline() -> None:
    policy = replace(RETRY, backoff_base_s=10.0, backoff_max_s=10.0)
    world = World(routes=(route(to=(target(retries=policy, timeout=0.5),)),))
    for _ in range(10):
        att = world.attempt()
        att.step(A.START)
        assert att.step(A.HEAD, 503) == A.BACKOFF and att.delay <= 0.5
        att.close()


def test_an_empty_retry_budget_passes_the_response_on() -> None:
    policy = replace(RETRY, budget_ratio=0.0, budget_min_per_second=0.0)
    world = World(routes=(route(to=(target(retries=policy),)),))
    att = world.attempt()
    att.step(A.START)
    assert att.step(A.HEAD, 503) == A.RESPOND


def test_a_client_that_stalled_its_upload_is_not_blamed() -> None:
    """408 for the client's stall: no outlier report, no retry."""
    od = OutlierDetection(consecutive_5xx=1, max_ejection_percent=100)
    world = World(outlier={"api": od})
    att = world.attempt(Req(method="PUT", body=Body()))
    att.step(A.START)
    assert att.step(A.FAILED, A.CLIENT_TIMEOUT) == A.LOCAL and att.status == 408
    assert world.counted("meshgen_ejections_total") == 0


def test_outlier_reports_eject_and_a_retry_with_nothing_left_is_503() -> None:
    """A response that is retried and then finds no healthy endpoint is answered "no healthy
    endpoint" (the retried response is gone), never left unanswered."""
    od = OutlierDetection(consecutive_5xx=1, max_ejection_percent=100)
    world = World(clusters=(cluster(ports=(9001,)),), outlier={"api": od})
    att = world.attempt()
    att.step(A.START)
    assert att.step(A.HEAD, 500) == A.BACKOFF
    assert world.counted("meshgen_ejections_total", endpoint=EP1) == 1
    assert att.step(A.WOKE) == A.LOCAL and att.answer == A.NO_ENDPOINT


def test_a_failure_then_no_endpoint_answers_that_failure() -> None:
    od = OutlierDetection(consecutive_5xx=1, max_ejection_percent=100)
    world = World(clusters=(cluster(ports=(9001,)),), outlier={"api": od})
    att = world.attempt()
    att.step(A.START)
    assert att.step(A.FAILED, "connect-failure") == A.BACKOFF
    assert att.step(A.WOKE) == A.LOCAL and att.answer == A.FAILURES["connect-failure"]


def test_no_time_left_for_a_try_is_a_timeout_without_a_connection() -> None:
    world = World(routes=(route(to=(target(retries=None, timeout=0.0),)),))
    att = world.attempt()
    assert att.step(A.START) == A.LOCAL and att.status == 504
    assert world.counted("meshgen_upstream_requests_total", code="timeout") == 1


def test_an_upload_still_arriving_has_no_deadline_yet() -> None:
    world = World()
    body = Body(complete=False, ended_at=0.0)
    att = world.attempt(Req(method="PUT", body=body))
    assert att.step(A.START) == A.TRY
    assert att.deadline == A.INF and att.per_try == 1.0
    body.complete, body.ended_at = True, world.clock.now + 30
    world.clock.now += 30
    assert att.step(A.FAILED, "reset") == A.BACKOFF
    assert att.deadline == A.INF  # recomputed at the next admission
    assert att.step(A.WOKE) == A.TRY and att.deadline == world.clock.now + 5.0


# ---- the circuit breaker ---------------------------------------------------------------


def test_max_requests_reached_is_a_fast_503_marked_overloaded() -> None:
    world = World(clusters=(cluster(circuit_breaker=CircuitBreaker(max_requests=1)),))
    first = world.attempt()
    assert first.step(A.START) == A.TRY
    att = world.attempt()
    assert att.step(A.START) == A.LOCAL and att.answer == A.OVERLOADED
    assert dict(att.answer.headers) == {b"x-meshgen-overloaded": b"true"}


def test_busy_connections_wait_in_the_queue_until_granted_or_expired() -> None:
    world = World(clusters=(cluster(circuit_breaker=CircuitBreaker(max_connections=1)),))
    first = world.attempt()
    first.step(A.START)
    att = world.attempt()
    assert att.step(A.START) == A.WAIT and att.wait_until == world.clock.now + 5.0
    assert att.step(A.GRANTED) == A.TRY and att.holding
    late = world.attempt()
    assert late.step(A.START) == A.WAIT
    assert late.step(A.EXPIRED) == A.LOCAL and late.answer == A.QUEUE_TIMEOUT


def test_requests_of_one_loop_pass_find_the_queue_as_the_ones_before_left_it() -> None:
    """Limits 1/1/1 and five requests admitted before any driver runs (the fast path goes on
    in tasks that start after the loop pass): one tries, one waits, three are refused. The
    waiting one holds its place from admission on, not from when its driver waits."""
    limits = CircuitBreaker(max_connections=1, max_pending_requests=1, max_requests=1)
    world = World(clusters=(cluster(circuit_breaker=limits),))
    atts = [world.attempt() for _ in range(5)]
    actions = [att.step(A.START) for att in atts]
    assert actions == [A.TRY, A.WAIT, A.LOCAL, A.LOCAL, A.LOCAL]
    assert all(att.answer == A.OVERLOADED for att in atts[2:])
    breaker = world.gen.breakers["api"]
    assert breaker.pending == 1
    finish(atts[0])  # the slot goes to the waiter, whose driver has not started waiting
    assert atts[1].pending is not None and atts[1].pending.granted is True
    slot = atts[1].pending

    async def waited() -> bool:
        return await wait_for_slot(slot, breaker, asyncio.get_running_loop(), 1e9)

    assert asyncio.run(waited())  # the driver starts late and finds its slot


def test_a_request_that_ends_while_queued_leaves_neither_place_nor_slot() -> None:
    limits = CircuitBreaker(max_connections=1, max_pending_requests=1, max_requests=1)
    world = World(clusters=(cluster(circuit_breaker=limits),))
    first, queued, granted = world.attempt(), world.attempt(), world.attempt()
    assert first.step(A.START) == A.TRY and queued.step(A.START) == A.WAIT
    queued.close()  # e.g. its task was cancelled before it waited
    breaker = world.gen.breakers["api"]
    assert breaker.pending == 0
    assert granted.step(A.START) == A.WAIT
    finish(first)  # the slot is handed to ``granted`` ...
    granted.close()  # ... which ends before using it: the slot is freed
    assert (breaker.pending, breaker.requests) == (0, 0)


def test_a_wait_cancelled_after_its_grant_gives_the_slot_back_once() -> None:
    """The slot is handed over, then the waiting task is cancelled before it resumes: the
    slot goes to the next waiter once, and that waiter keeps it."""
    limits = CircuitBreaker(max_connections=1, max_pending_requests=2, max_requests=1)
    world = World(clusters=(cluster(circuit_breaker=limits),))
    first, second, third = world.attempt(), world.attempt(), world.attempt()
    assert [a.step(A.START) for a in (first, second, third)] == [A.TRY, A.WAIT, A.WAIT]
    breaker = world.gen.breakers["api"]

    async def cancelled_after_grant() -> None:
        assert second.pending is not None
        loop = asyncio.get_running_loop()
        task = loop.create_task(wait_for_slot(second.pending, breaker, loop, 1e9))
        await asyncio.sleep(0)  # waiting now
        finish(first)  # hands the slot to ``second``
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        second.close()  # as ``drive`` does on the way out

    asyncio.run(cancelled_after_grant())
    assert third.pending is not None and third.pending.granted is True
    assert (breaker.requests, breaker.pending) == (1, 0)


def test_close_gives_back_what_is_held_once() -> None:
    world = World()
    att = world.attempt()
    att.step(A.START)
    att.close()
    att.close()
    assert world.gen.breakers["api"].requests == 0 and world.in_flight() == 0
    with pytest.raises(StepError):
        att.step(A.HEAD, 200)


def test_a_shadow_only_forwards_and_is_not_accounted() -> None:
    world = World()
    att = Attempt.shadow(world.gen, target(retries=None), b"GET / HTTP/1.1\r\n\r\n")
    assert att.step(A.FORWARD) == A.TRY and att.route is None
    assert finish(att) == A.DONE
    assert world.counted("meshgen_requests_total") == 0
    assert world.counted("meshgen_upstream_requests_total", code="200") == 1


def test_header_match_sees_the_generated_request_id() -> None:
    """The id is made before routing (as Envoy's connection manager does)."""
    match = Match(hosts=("api",), headers=(HeaderMatch("x-request-id", "present"),))
    world = World(routes=(Route("r", match, to=(target(),)),))
    assert world.attempt().step(A.START) == A.TRY


# ---- properties -------------------------------------------------------------------------

CONDITIONS = ["connect-failure", "reset", "5xx", "gateway-error", "retriable-4xx"]
OUTCOMES = st.one_of(
    st.sampled_from([200, 204, 404, 409, 500, 502, 503, 504]),
    st.sampled_from(["connect-failure", "reset", "timeout", A.STALE]),
)


@given(
    outcomes=st.lists(OUTCOMES, min_size=1, max_size=12),
    attempts=st.integers(0, 4),
    on=st.sets(st.sampled_from(CONDITIONS), min_size=1),
    cancel_at=st.integers(0, 20),
)
def test_any_sequence_of_outcomes_ends_once_and_gives_everything_back(
    outcomes: list[int | str], attempts: int, on: set[str], cancel_at: int
) -> None:
    """Whatever the endpoints answer (and wherever a driver gives up): at most 1 + attempts
    counted tries, the last action is LOCAL or DONE, the breaker slot and in-flight counts are
    back to zero, and each counted try is in meshgen_upstream_requests_total."""
    policy = RetryPolicy(attempts, 1.0, tuple(sorted(on)), budget_min_per_second=100)  # type: ignore[arg-type]
    world = World(routes=(route(to=(target(retries=policy),)),))
    att = world.attempt()
    action = att.step(A.START)
    steps = 0
    feed = iter(outcomes)
    while action not in (A.LOCAL, A.DONE):
        steps += 1
        if steps == cancel_at:  # the driver's task is cancelled here
            att.close()
            break
        if action == A.TRY:
            outcome = next(feed, 200)
            event = A.HEAD if isinstance(outcome, int) else A.FAILED
            action = att.step(event, outcome)
        elif action == A.BACKOFF:
            assert att.delay >= 0
            world.clock.now += att.delay
            action = att.step(A.WOKE)
        elif action == A.RESPOND:
            action = att.step(A.STREAMED)
        else:
            pytest.fail(f"unexpected action {A.ACTION_NAMES[action]}")
    assert att.tries <= 1 + attempts
    assert world.gen.breakers["api"].requests == 0 and world.in_flight() == 0
    assert att.state == A.ENDED
    assert world.counted("meshgen_upstream_requests_total") <= att.tries
    if action in (A.LOCAL, A.DONE):
        assert att.status > 0
        assert world.counted("meshgen_retries_total", service="api") == att.tries - 1
