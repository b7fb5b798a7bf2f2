"""One request's life as a table-driven state machine: route, admit, pick, try, retry, respond.

Theory of operation
-------------------
An :class:`Attempt` makes every decision about one request and does no I/O: a *driver* feeds it
events (``step(event, value)``) and carries out the action each step returns. The drivers are
thin: the proxy's coroutine path and its callback fast path, the in-process client and the
mirror all run this one machine, so none of them decides anything on its own (h11's
``_state.py`` is the model; the retry decision is Envoy's ``RetryState::shouldRetry``).

The order of decisions is Envoy's: the request id (the caller's, else a new one), the target
(a target that does not normalise: 400, and the connection closes), the route (404), the split
(the weighted destination is chosen first, so every later local answer counts under that
service and subset), redirect (it forwards nothing, so it answers every caller the listener
admits), access (403), the route's rate limit (429), fault delay and abort, the service's rate
limit (429), mirror, then tries. Each try is admitted by the service's circuit breaker (go, wait
in its pending queue until a slot is handed over or the request ``timeout`` passes: 504, or a
fast 503 with ``x-meshgen-overloaded``), picks an endpoint avoiding those already tried, and
ends in an *outcome*: a response status, or ``connect-failure`` / ``reset`` / ``timeout`` /
``client-timeout`` / ``stale``. A ``stale`` pooled connection (closed by the server before it
answered) is tried again once on a fresh one without counting as a try. Otherwise the outcome
is counted, reported to outlier detection, and retried when :meth:`Attempt.retry_allowed`
says so; the breaker slot is given up during the backoff and taken again for the next try.

=============  ==========  ===================================  =============================
state          event       what the machine does                action(s) returned
=============  ==========  ===================================  =============================
NEW            START       id, target, route, split, redirect,  LOCAL, DELAY, MIRROR, WAIT,
                           access, rate limits, fault, mirror   TRY (or an outcome's action)
NEW            FORWARD     straight to the tries (a mirror)     WAIT, TRY, LOCAL
DELAYING       WOKE        fault abort, service rate limit...   LOCAL, MIRROR, WAIT, TRY
MIRRORING      MIRRORED    start the tries                      WAIT, TRY, LOCAL
QUEUED         GRANTED     a breaker slot was handed over       TRY, LOCAL
QUEUED         EXPIRED     the pending wait ran out             LOCAL (504)
TRYING         HEAD        a response head with this status     RESPOND, BACKOFF
TRYING         FAILED      the try failed with this outcome     TRY (stale), BACKOFF, LOCAL
BACKING_OFF    WOKE        admission of the next try            WAIT, TRY, LOCAL
RESPONDING     STREAMED    the response went to the caller      DONE
ENDED          (none)      every event is a :class:`StepError`
=============  ==========  ===================================  =============================

Actions tell the driver what to do, with their arguments on the attempt: ``LOCAL`` answer
:attr:`Attempt.answer` yourself; ``DELAY``/``BACKOFF`` sleep :attr:`Attempt.delay` (BACKOFF:
first drop the try's connection and detach the request body) then ``WOKE``; ``MIRROR`` copy the
request to :attr:`Attempt.mirror` then ``MIRRORED``; ``WAIT`` wait in :attr:`Attempt.breaker`'s
queue until :attr:`Attempt.wait_until` then ``GRANTED``/``EXPIRED``; ``TRY`` send the request
to :attr:`Attempt.picked` and wait at most :attr:`Attempt.per_try` for the response head, then
``HEAD`` (status) or ``FAILED`` (outcome); ``RESPOND`` send the response on, then
``STREAMED``; ``DONE`` nothing is left (:attr:`Attempt.status` is final).

Invariants: the machine holds at most one breaker slot and one endpoint's in-flight count at a
time and gives both back exactly once, on its way to ``ENDED`` or in :meth:`Attempt.close`
(which a driver calls when it is cancelled); time comes only from the injected clock; every
``(state, event)`` pair not in the table raises, so a driver bug cannot skip a decision.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from ..balancers import request_hash_key
from ..paths import split_target
from ..resilience import backoff_delay, retryable

if TYPE_CHECKING:
    import random

    from ..access import AccessPolicy
    from ..audit import AuditLog
    from ..resilience import CircuitBreaker, RetryBudget, TokenBucket
    from ..router import Router
    from ..tables import Cluster, Mirror, RetryPolicy, Route, Target
    from ..upstream_conn import UpstreamConnection
    from ..upstreams import Picked, Upstreams

# Actions (what the driver does next).
LOCAL, DELAY, MIRROR, WAIT, TRY, BACKOFF, RESPOND, DONE = range(8)
# Events (what happened).
START, FORWARD, WOKE, MIRRORED, GRANTED, EXPIRED, HEAD, FAILED, STREAMED = range(9)
# States.
NEW, DELAYING, MIRRORING, QUEUED, TRYING, BACKING_OFF, RESPONDING, ENDED = range(8)

ACTION_NAMES: Final = ("LOCAL", "DELAY", "MIRROR", "WAIT", "TRY", "BACKOFF", "RESPOND", "DONE")
EVENT_NAMES: Final = (
    "START", "FORWARD", "WOKE", "MIRRORED", "GRANTED", "EXPIRED", "HEAD", "FAILED", "STREAMED"
)  # fmt: skip
STATE_NAMES: Final = (
    "NEW", "DELAYING", "MIRRORING", "QUEUED", "TRYING", "BACKING_OFF", "RESPONDING", "ENDED"
)  # fmt: skip

INF: Final = float("inf")
CLIENT_TIMEOUT: Final = "client-timeout"  # the client stopped sending its body: 408, no retry
STALE: Final = "stale"  # a reused connection the server had closed: one free retry
TARGET_CACHE_SIZE: Final = 4096


class StepError(Exception):
    """An event the current state does not accept (a driver bug, never a peer's doing)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A response the proxy makes itself. ``close``: the connection ends after it."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = False


BAD_TARGET: Final = Answer(400, b"bad request target\n", close=True)
NO_ENDPOINT: Final = Answer(503, b"no healthy endpoint\n")
OVERLOADED: Final = Answer(503, b"upstream overflow\n", ((b"x-meshgen-overloaded", b"true"),))
QUEUE_TIMEOUT: Final = Answer(504, b"upstream timeout\n")
FAULT_BODY: Final = b"fault injected\n"
DENIED: Final = Answer(403, b"access denied\n")
# The local answer to a try that failed without a response (outcome -> answer), Envoy's mapping:
# a connect failure is 503, a per-try or route timeout 504, a client that stalled its upload
# 408 (as Envoy's route idle_timeout before the response head), anything else a 502.
FAILURES: Final[Mapping[str, Answer]] = {
    "timeout": Answer(504, b"upstream timeout\n"),
    CLIENT_TIMEOUT: Answer(408, b"request timeout\n"),
    "connect-failure": Answer(503, b"upstream connect error\n"),
    "reset": Answer(502, b"upstream reset\n"),
}


def failure_answer(outcome: str) -> Answer:
    """The local answer for a failed try's ``outcome`` (unknown outcomes are resets)."""
    return FAILURES.get(outcome) or FAILURES["reset"]


_ID_PREFIX: Final = os.urandom(8).hex().encode()
_ids = itertools.count(1)


def new_request_id() -> bytes:
    """A request id unique in this process: a random prefix per process and a counter."""
    return b"%s-%016x" % (_ID_PREFIX, next(_ids))


_SPLITS: dict[bytes | str, tuple[str, str] | None] = {}


def split(target: bytes | str) -> tuple[str, str] | None:
    """:func:`~..paths.split_target`, memoised (clients repeat the same few targets; invalid
    ones are kept too, as None); bounded by :data:`TARGET_CACHE_SIZE`."""
    try:
        return _SPLITS[target]
    except KeyError:
        pass
    if len(_SPLITS) >= TARGET_CACHE_SIZE:
        _SPLITS.clear()
    result = _SPLITS[target] = split_target(target)
    return result


def request_deadline(body: Body | None, now: float, timeout: float) -> float:
    """When the route's ``timeout`` ends: that long after the end of the request (``now`` for a
    request without a body), or :data:`INF` while the body is still arriving (then only
    ``idle_timeout`` guards the upload, however long it takes)."""
    if body is None:
        return now + timeout
    return body.ended_at + timeout if body.complete else INF


class Body(Protocol):
    """What the machine reads of a request body (``http1.RequestBody`` is one)."""

    @property
    def complete(self) -> bool: ...

    @property
    def ended_at(self) -> float: ...

    @property
    def replayable(self) -> bool: ...


class Caller(Protocol):
    """The downstream side: who sent the request and whether it is still there."""

    @property
    def client_ip(self) -> str: ...

    @property
    def closed(self) -> bool: ...


class Incoming(Protocol):
    """What the machine reads of a request (``http1.Request`` is one, so is the client's)."""

    @property
    def method(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def target(self) -> bytes: ...

    request_id: bytes | None  # the caller's x-request-id; the machine sets it when absent

    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...

    @property
    def body(self) -> Body | None: ...

    @property
    def conn(self) -> Caller: ...

    def header(self, name: str) -> str | None: ...


class Counters(Protocol):
    """The metrics the machine writes (``metrics.Metrics`` is one)."""

    def observe_request(
        self, listener: str, route: str, service: str, subset: str, code: int, duration_s: float
    ) -> None: ...

    def inc_upstream(self, service: str, endpoint: str, code: int | str) -> None: ...

    def inc_retry(self, service: str) -> None: ...

    def inc_rate_limited(self, route: str) -> None: ...

    def inc_denied(self, listener: str, source: str, service: str, mode: str) -> None: ...


class Policies(Protocol):
    """Everything the machine consults, derived once per table generation."""

    @property
    def routers(self) -> Mapping[str, Router]: ...

    @property
    def enforced(self) -> Mapping[str, bool]: ...

    @property
    def access(self) -> AccessPolicy | None: ...

    @property
    def audit(self) -> Mapping[str, bool]: ...  # listener -> access: audit (forward, log)

    @property
    def audit_log(self) -> AuditLog: ...

    @property
    def route_buckets(self) -> Mapping[str, TokenBucket]: ...

    @property
    def service_buckets(self) -> Mapping[str, TokenBucket]: ...

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]: ...

    @property
    def budgets(self) -> Mapping[int, RetryBudget]: ...

    @property
    def clusters(self) -> Mapping[str, Cluster]: ...

    @property
    def hashing(self) -> frozenset[str]: ...

    @property
    def outlier(self) -> frozenset[str]: ...

    @property
    def upstreams(self) -> Upstreams: ...

    @property
    def metrics(self) -> Counters: ...

    @property
    def rng(self) -> random.Random: ...


_NO_EXCLUDE: frozenset[str] = frozenset()


class Attempt:
    """The decisions of one request (see the module docstring); drivers call :meth:`step`."""

    __slots__ = ("address", "answer", "begun", "breaker", "budget", "caller", "clock", "conn",
                 "deadline", "delay", "exclude", "gen", "hash_key", "head", "holding",
                 "last", "listener", "max_tries", "mirror", "path", "per_try", "picked",
                 "policy", "query", "req", "route", "stale_retry", "state", "status",
                 "target", "tries", "wait_until")  # fmt: skip

    def __init__(
        self,
        gen: Policies,
        listener: str,
        req: Incoming,
        clock: Callable[[], float],
        caller: str | None = None,
    ) -> None:
        self.gen = gen
        self.listener = listener  # "" for the in-process client (its router has every route)
        self.req = req
        self.clock = clock
        self.caller = caller  # the verified identity, on listeners that enforce access
        self.state = NEW
        self.path = self.query = ""
        self.route: Route | None = None
        self.target: Target | None = None
        self.mirror: Mirror | None = None
        self.hash_key: bytes | None = None
        self.policy: RetryPolicy | None = None
        self.budget: RetryBudget | None = None
        self.breaker: CircuitBreaker | None = None
        self.deadline = INF
        self.max_tries = 1
        self.tries = 0
        self.exclude = _NO_EXCLUDE  # endpoints already tried
        self.stale_retry = True
        self.last = NO_ENDPOINT  # the answer when no endpoint is left for another try
        self.holding = False  # one of the breaker's slots
        self.picked: Picked | None = None
        self.begun = False  # ``picked`` counts this request in flight
        self.address = ""
        self.per_try = 0.0
        self.delay = 0.0
        self.wait_until = 0.0
        self.answer: Answer | None = None
        self.status = 0
        # Driver slots: the try's connection and the upstream head (built once, reused).
        self.conn: UpstreamConnection | None = None
        self.head = b""

    @classmethod
    def shadow(
        cls,
        gen: Policies,
        target: Target,
        req: Incoming,
        clock: Callable[[], float],
    ) -> Attempt:
        """An attempt that only forwards, to ``target``: a mirror's copy (step ``FORWARD``)."""
        att = cls(gen, "", req, clock)
        att.target = target
        return att

    # ---- names (logs, errors, tests) ----------------------------------------------------

    @property
    def route_name(self) -> str:
        return self.route.name if self.route is not None else ""

    @property
    def service(self) -> str:
        return self.target.service if self.target is not None else ""

    @property
    def subset(self) -> str:
        target = self.target
        return (target.subset or "") if target is not None else ""

    # ---- the table ----------------------------------------------------------------------

    def step(self, event: int, value: int | str = 0) -> int:
        """Feed one event; returns the next action (module docstring)."""
        handler = _TABLE[self.state][event]
        if handler is None:
            raise StepError(
                f"event {EVENT_NAMES[event]} in state {STATE_NAMES[self.state]} "
                f"(route {self.route_name!r})"
            )
        return handler(self, value)

    # ---- admission ----------------------------------------------------------------------

    def _start(self, _: int | str) -> int:
        req = self.req
        gen = self.gen
        if req.request_id is None:  # made here, so routes, the head and a mirror all see it
            rid = req.request_id = new_request_id()
            req.headers.append((b"x-request-id", rid))
        where = _SPLITS.get(req.target)
        if where is None:
            where = split(req.target)
            if where is None:
                return self._local(BAD_TARGET)
        path = self.path = where[0]
        self.query = where[1]
        router = gen.routers[self.listener]
        cr = router.match(req.host, path, req.method, req.header)
        if cr is None:
            body = f"no route for host {req.host!r}\n".encode("utf-8", "replace")
            return self._local(Answer(404, body))
        route = self.route = cr.route
        # The destination first: every local answer from here on counts under it.
        self.target = router.pick(cr)
        redirect = route.redirect
        if redirect is not None:  # forwards nothing: every caller the listener admits gets it
            loc = ((b"location", redirect.location.encode()),)
            return self._local(Answer(redirect.status, b"", loc))
        if gen.enforced[self.listener]:
            access = gen.access
            assert access is not None
            denied = access.denial(route.name, self.caller, req.method, path)
            if denied is not None:
                audit = gen.audit[self.listener]
                mode = "audit" if audit else "enforce"
                gen.metrics.inc_denied(self.listener, self.caller or "", denied, mode)
                if not audit:
                    return self._local(DENIED)
                gen.audit_log.denied(
                    self.listener, self.caller, req.method, path, route.name, denied
                )
        if route.rate_limit is not None:
            wait = gen.route_buckets[route.name].try_acquire()
            if wait is not None:
                return self._limited(wait)
        fault = route.fault
        if fault is not None and fault.delay_s > 0 and router.chance(fault.delay_percent):
            self.delay = fault.delay_s
            self.state = DELAYING
            return DELAY
        return self._delayed(0)

    def _delayed(self, _: int | str) -> int:
        """After the fault delay (if any): fault abort, service rate limit, mirror."""
        route = self.route
        target = self.target
        assert route is not None and target is not None
        gen = self.gen
        fault = route.fault
        router = gen.routers[self.listener]
        if fault is not None and fault.abort_status and router.chance(fault.abort_percent):
            return self._local(Answer(fault.abort_status, FAULT_BODY))
        bucket = gen.service_buckets.get(target.service)
        if bucket is not None:
            wait = bucket.try_acquire()
            if wait is not None:
                return self._limited(wait)
        if target.service in gen.hashing:
            lb = gen.clusters[target.service].load_balancer
            self.hash_key = request_hash_key(lb, self.req.header, self.req.conn.client_ip)
        mirror = route.mirror
        if mirror is not None and router.chance(mirror.percent):
            self.mirror = mirror
            self.state = MIRRORING
            return MIRROR
        return self._forward(0)

    def _limited(self, wait: float) -> int:
        self.gen.metrics.inc_rate_limited(self.route_name)
        retry_after = b"%d" % max(1, int(wait + 0.999)) if wait != INF else b"3600"
        return self._local(Answer(429, b"rate limited\n", ((b"retry-after", retry_after),)))

    def _forward(self, _: int | str) -> int:
        """The tries begin: retry policy and budget, the route timeout's deadline."""
        target = self.target
        assert target is not None
        gen = self.gen
        policy = self.policy = target.retries
        if policy is not None:
            self.max_tries = 1 + policy.attempts
            budget = self.budget = gen.budgets.get(id(target))
            if budget is not None:
                budget.record_request()
        self.breaker = gen.breakers[target.service]
        self.deadline = request_deadline(self.req.body, self.clock(), target.timeout_s)
        return self._admit(0)

    def _admit(self, _: int | str) -> int:
        """Admission of one try by the circuit breaker (a retry is admitted again, as Envoy)."""
        target = self.target
        assert target is not None
        if self.deadline == INF:  # the body was still arriving: has it ended by now?
            self.deadline = request_deadline(self.req.body, self.clock(), target.timeout_s)
        if not self.holding:
            breaker = self.breaker
            assert breaker is not None
            verdict = breaker.admit()
            if verdict is not None:
                if verdict != "wait":
                    return self._local(OVERLOADED)
                # The route timeout covers the pending time too (as Envoy's).
                self.wait_until = min(self.deadline, self.clock() + target.timeout_s)
                self.state = QUEUED
                return WAIT
            self.holding = True
        return self._pick(0)

    def _granted(self, _: int | str) -> int:
        self.holding = True
        return self._pick(0)

    def _expired(self, _: int | str) -> int:
        return self._local(QUEUE_TIMEOUT)

    # ---- tries --------------------------------------------------------------------------

    def _pick(self, _: int | str) -> int:
        target = self.target
        assert target is not None
        gen = self.gen
        picked = gen.upstreams.pick(target.service, target.subset, self.hash_key, self.exclude)
        if picked is None:
            return self._local(self.last)
        self.picked = picked
        self.address = picked.endpoint.address
        self.tries += 1
        remaining = self.deadline - self.clock()
        if remaining == INF:  # the route timeout starts when the body is complete
            remaining = target.timeout_s
        policy = self.policy
        self.per_try = min(policy.per_try_timeout_s, remaining) if policy is not None else remaining
        gen.upstreams.begin(picked)
        self.begun = True
        self.state = TRYING
        if self.per_try <= 0:  # no time left for this try
            return self._outcome("timeout", False)
        return TRY

    def _head(self, status: int | str) -> int:
        return self._outcome(status, True)

    def _failed(self, outcome: int | str) -> int:
        return self._outcome(outcome, False)

    def _outcome(self, result: int | str, responded: bool) -> int:
        """A try ended: with a response head (``responded``, ``result`` its status) or a failure
        outcome. Count it, tell outlier detection, then retry, respond or answer locally."""
        picked = self.picked
        assert picked is not None
        gen = self.gen
        if result == STALE:
            self._end_try()
            if self.stale_retry:  # retried once on a fresh connection, not counted as a try
                self.stale_retry = False
                self.tries -= 1
                return self._pick(0)
            result = "reset"
        gen.metrics.inc_upstream(picked.service, self.address, result)
        gone = self.req.conn.closed or result == CLIENT_TIMEOUT  # nothing to retry for
        if not gone and picked.service in gen.outlier:
            gen.upstreams.report(picked, result)
        if self.retry_allowed(result, responded, gone):
            return self._retry(result, responded)
        if responded:
            self.status = result  # type: ignore[assignment]
            self.state = RESPONDING
            return RESPOND
        self._end_try()
        return self._local(failure_answer(result))  # type: ignore[arg-type]

    def retry_allowed(self, result: int | str, responded: bool, gone: bool) -> bool:
        """Envoy's ``shouldRetry``: the caller is still there, a policy whose conditions the
        outcome meets (statuses below 400 meet none), tries and time left, a request body
        that can be sent again, and the retry budget allows one more (spent here)."""
        policy = self.policy
        if gone or policy is None or (responded and result < 400):  # type: ignore[operator]
            return False
        body = self.req.body
        if (
            self.tries >= self.max_tries
            or (body is not None and not body.replayable)
            or not retryable(policy, self.req.method, result)
            or self.deadline - self.clock() <= 0
        ):
            return False
        budget = self.budget
        return budget is not None and budget.try_retry()

    def _retry(self, result: int | str, responded: bool) -> int:
        policy = self.policy
        target = self.target
        assert policy is not None and target is not None
        self.exclude = self.exclude | {self.address}
        self.gen.metrics.inc_retry(target.service)
        # What to answer if no endpoint is left for the next try: this try's failure; after a
        # response that is retried, "no healthy endpoint" (that response is dropped).
        self.last = NO_ENDPOINT if responded else failure_answer(result)  # type: ignore[arg-type]
        delay = backoff_delay(self.tries, policy.backoff_base_s, policy.backoff_max_s, self.gen.rng)
        self._end_try()
        self._release()  # free during the backoff, as in Envoy
        self.delay = min(delay, max(0.0, self.deadline - self.clock()))
        self.state = BACKING_OFF
        return BACKOFF

    def _streamed(self, _: int | str) -> int:
        self._end_try()
        self._release()
        self.state = ENDED
        return DONE

    # ---- ending -------------------------------------------------------------------------

    def _local(self, answer: Answer) -> int:
        self.answer = answer
        self.status = answer.status
        self.close()
        return LOCAL

    def _end_try(self) -> None:
        if self.begun:
            self.begun = False
            assert self.picked is not None
            self.gen.upstreams.end(self.picked)

    def _release(self) -> None:
        if self.holding:
            self.holding = False
            assert self.breaker is not None
            self.breaker.release()

    def close(self) -> None:
        """End here (idempotent): give back the endpoint's in-flight count and the breaker
        slot if still held. Drivers call it when they stop early (a cancelled task)."""
        self._end_try()
        self._release()
        self.state = ENDED

    def account(self, duration_s: float) -> None:
        """Count the finished request in ``meshgen_requests_total`` and its duration (nothing
        for a request that got no status: it failed inside the proxy)."""
        if self.status:
            self.gen.metrics.observe_request(
                self.listener, self.route_name, self.service, self.subset, self.status, duration_s
            )


_Handler = Callable[[Attempt, "int | str"], int]
_TABLE: list[list[_Handler | None]] = [[None] * len(EVENT_NAMES) for _ in STATE_NAMES]
TRANSITIONS: Final[dict[tuple[int, int], _Handler]] = {
    (NEW, START): Attempt._start,
    (NEW, FORWARD): Attempt._forward,
    (DELAYING, WOKE): Attempt._delayed,
    (MIRRORING, MIRRORED): Attempt._forward,
    (QUEUED, GRANTED): Attempt._granted,
    (QUEUED, EXPIRED): Attempt._expired,
    (TRYING, HEAD): Attempt._head,
    (TRYING, FAILED): Attempt._failed,
    (BACKING_OFF, WOKE): Attempt._admit,
    (RESPONDING, STREAMED): Attempt._streamed,
}
for (_state, _event), _handler in TRANSITIONS.items():
    _TABLE[_state][_event] = _handler
