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
admits), access (403; on an ``access: audit`` listener the denial is counted and logged and the
request goes on), the route's rate limit (429), fault delay and abort, the service's rate
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
``HEAD`` (status) or ``FAILED`` (outcome), sending :attr:`Attempt.head` (the machine builds
it with ``forward/heads.py`` for the first try); ``RESPOND`` send the response on, then
``STREAMED``; ``DONE`` nothing is left (:attr:`Attempt.status` is final).

Invariants: the machine holds at most one breaker slot and one endpoint's in-flight count at a
time and gives both back exactly once, on its way to ``ENDED`` or in :meth:`Attempt.close`
(which a driver calls when it is cancelled); time comes only from the generation's clock (the
driver's loop time; a test's fake clock); every
``(state, event)`` pair not in the table raises, so a driver bug cannot skip a decision.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NoReturn

from ..codec.http1 import Request, RequestBody
from ..codec.paths import split_target
from ..policy import grpc
from ..policy.resilience import PendingSlot, backoff_delay, retryable
from ..upstream.balancers import request_hash_key
from .heads import Outgoing, request_head
from .local import LocalRequest

if TYPE_CHECKING:
    from ..codec.upstream_conn import UpstreamConnection
    from ..policy.resilience import CircuitBreaker
    from ..tables import Mirror, Route, Target
    from ..upstream.upstreams import Picked
    from .generation import Generation

# Actions (what the driver does next). Final literals: compiled code inlines them.
LOCAL: Final = 0
DELAY: Final = 1
MIRROR: Final = 2
WAIT: Final = 3
TRY: Final = 4
BACKOFF: Final = 5
RESPOND: Final = 6
DONE: Final = 7
# Events (what happened).
START: Final = 0
FORWARD: Final = 1
WOKE: Final = 2
MIRRORED: Final = 3
GRANTED: Final = 4
EXPIRED: Final = 5
HEAD: Final = 6
FAILED: Final = 7
STREAMED: Final = 8
# States.
NEW: Final = 0
DELAYING: Final = 1
MIRRORING: Final = 2
QUEUED: Final = 3
TRYING: Final = 4
BACKING_OFF: Final = 5
RESPONDING: Final = 6
ENDED: Final = 7

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
REFUSED_STREAM: Final = "refused-stream"  # an HTTP/2 stream the endpoint never processed
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
# gRPC needs trailers, which an HTTP/1.1 exchange cannot carry: a clear answer, not a hang.
GRPC_NEEDS_HTTP2: Final = Answer(400, b"gRPC needs HTTP/2; this request came over HTTP/1.1\n")
# The local answer to a try that failed without a response (outcome -> answer), Envoy's mapping:
# a connect failure or a refused HTTP/2 stream is 503, a per-try or route timeout 504, a client
# that stalled its upload 408 (as Envoy's route idle_timeout before the response head),
# anything else a 502.
FAILURES: Final[Mapping[str, Answer]] = {
    "timeout": Answer(504, b"upstream timeout\n"),
    CLIENT_TIMEOUT: Answer(408, b"request timeout\n"),
    "connect-failure": Answer(503, b"upstream connect error\n"),
    REFUSED_STREAM: Answer(503, b"upstream refused the stream\n"),
    "reset": Answer(502, b"upstream reset\n"),
}


def failure_answer(outcome: str) -> Answer:
    """The local answer for a failed try's ``outcome`` (unknown outcomes are resets)."""
    return FAILURES.get(outcome) or FAILURES["reset"]


def grpc_answer(answer: Answer, status: int) -> Answer:
    """``answer`` as a gRPC caller gets it: HTTP 200, trailers-only with ``grpc-status``
    ``status`` (``policy/grpc.py``)."""
    return Answer(200, b"", grpc.trailers_only(status, answer.body) + answer.headers, answer.close)


# Request ids made here are unique in this process: a random prefix per process, a counter.
_ID_PREFIX: Final = os.urandom(8).hex().encode() + b"-"  # then the count in decimal: no
# %-formatting per request (compiled code turns str(int) and encode into native calls)


class _Ids:
    """The count of request ids made (an attribute: compiled code adds to it natively, where
    ``next()`` of an ``itertools.count`` was a call by name)."""

    __slots__ = ("made",)

    def __init__(self) -> None:
        self.made = 0


_IDS: Final = _Ids()


_SPLITS: Final[dict[bytes | str, tuple[str, str] | None]] = {}


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


def request_deadline(body: RequestBody | None, now: float, timeout: float) -> float:
    """When the route's ``timeout`` ends: that long after the end of the request (``now`` for a
    request without a body), or :data:`INF` while the body is still arriving (then only
    ``idle_timeout`` guards the upload, however long it takes)."""
    if body is None:
        return now + timeout
    return body.ended_at + timeout if body.complete else INF


_NO_EXCLUDE: Final[frozenset[str]] = frozenset()
# Where :meth:`Attempt.begin` starts: each phase runs the ones after it.
_ROUTE: Final = 0
_AFTER_DELAY: Final = 1
_TRIES: Final = 2
_ADMIT: Final = 3
_PICK: Final = 4
_SHADOW = LocalRequest("GET", "", "/", {}, b"")  # what a mirror's attempt reads of its request


class Attempt:
    """The decisions of one request (see the module docstring); drivers call :meth:`step`."""

    __slots__ = ("answer", "begun", "breaker", "caller", "conn", "deadline", "delay",
                 "exclude", "gen", "grpc", "grpc_deadline", "grpc_status", "hash_key",
                 "head", "holding", "last", "listener", "mirror", "path", "pending", "per_try",
                 "picked", "query", "req", "route", "stale_retry", "start", "state", "status",
                 "target", "tries", "wait_until")  # fmt: skip
    # Set by the step that first needs them, never read before (not initialised: one request
    # costs fewer stores): path, query, mirror, breaker, deadline, picked, per_try, delay,
    # wait_until.

    def __init__(
        self,
        gen: Generation,
        listener: str,
        req: Outgoing,
        caller: str | None = None,
        start: float = 0.0,
    ) -> None:
        self.gen = gen
        self.listener = listener  # "" for the in-process client (its router has every route)
        self.req = req
        self.caller = caller  # the verified identity, on listeners that enforce access
        self.start = start  # when the request began (the driver's clock): its duration
        self.state = NEW
        self.path: str
        self.query: str
        self.route: Route | None = None
        self.target: Target | None = None
        self.mirror: Mirror
        self.hash_key: bytes | None = None
        self.breaker: CircuitBreaker
        self.deadline: float
        self.tries = 0
        self.exclude = _NO_EXCLUDE  # endpoints already tried
        self.stale_retry = True
        self.last = NO_ENDPOINT  # the answer when no endpoint is left for another try
        self.holding = False  # one of the breaker's slots
        self.pending: PendingSlot | None = None  # its place in the breaker's queue (WAIT)
        self.picked: Picked
        self.begun = False  # ``picked`` counts this request in flight
        self.per_try: float
        self.delay: float
        self.wait_until: float
        self.answer: Answer | None = None
        self.status = 0
        self.head = b""  # the upstream request head (built for the first try)
        self.conn: UpstreamConnection | None = None  # a driver slot: the try's connection
        self.grpc = False  # a gRPC request (by its content-type): policy/grpc.py applies
        self.grpc_deadline = INF  # when the caller's grpc-timeout runs out
        # The grpc-status the caller gets, -1 while unknown. A driver sets it from a response
        # head that ends the stream (trailers-only) before HEAD, and from trailers before
        # STREAMED; the machine sets it for its own answers.
        self.grpc_status = -1

    @classmethod
    def shadow(cls, gen: Generation, target: Target, head: bytes) -> Attempt:
        """An attempt that only forwards ``head`` to ``target``: a mirror's copy (step
        ``FORWARD``). It stands on its own: the original caller leaving does not end it."""
        att = cls(gen, "", _SHADOW)
        att.target = target
        att.head = head
        return att

    # ---- names (logs, errors, tests) ----------------------------------------------------

    @property
    def address(self) -> str:
        """The address of the endpoint of the try (once one was picked)."""
        return self.picked.endpoint.address

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
            self._refuse(event)
        return handler(self, event, value)

    def _refuse(self, event: int) -> NoReturn:
        raise StepError(
            f"event {EVENT_NAMES[event]} in state {STATE_NAMES[self.state]} "
            f"(route {self.route_name!r})"
        )

    # ---- admission ----------------------------------------------------------------------

    def _start(self, _event: int, _value: int | str) -> int:
        return self.begin()

    def _woke(self, _event: int, _value: int | str) -> int:
        """After a fault delay, or a retry's backoff (the next try's admission)."""
        return self.begin(_AFTER_DELAY if self.state == DELAYING else _ADMIT)

    def _begin(self, _event: int, _value: int | str) -> int:
        """The tries begin (after the mirror, or at once for a mirror's own copy)."""
        return self.begin(_TRIES)

    def _queued(self, event: int, _value: int | str) -> int:
        """A breaker slot was handed over (GRANTED), or the wait for one ran out (EXPIRED)."""
        self.pending = None  # out of the queue either way
        if event == EXPIRED:
            return self._local(QUEUE_TIMEOUT)
        self.holding = True
        return self.begin(_PICK)

    def begin(self, phase: int = _ROUTE) -> int:
        """The decisions in their order (module docstring), from ``phase`` on, until one
        needs the driver: one method, so the common request costs one call, not one per step.
        Called without a phase it is START (``step(START)``) for drivers that call it directly
        (the proxy's fast path). (One name: a compiled class cannot alias a method.)"""
        req = self.req
        gen = self.gen
        route: Route | None  # None for a mirror's copy (it has a target, no route)
        target: Target | None
        if phase == _ROUTE:
            if self.state != NEW:
                self._refuse(START)
            if req.method == "POST" and grpc.is_grpc(req.header("content-type")):
                self.grpc = True
                if getattr(req, "version", "") in grpc.HTTP1_VERSIONS:  # an HTTP/1.x parser's
                    return self._local(GRPC_NEEDS_HTTP2)
                timeout = grpc.parse_timeout(req.header("grpc-timeout"))
                if timeout is not None:  # it caps the route timeout
                    self.grpc_deadline = gen.clock() + timeout
            if req.request_id is None:  # made here, so routes, the head and a mirror see it
                made = _IDS.made = _IDS.made + 1
                rid = _ID_PREFIX + str(made).encode()
                if isinstance(req, Request):  # (compiled code sets an attribute of a union of
                    req.request_id = rid  # classes by name: the proxy's own is set natively)
                else:
                    req.request_id = rid
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
            target = self.target = router.pick(cr)
            redirect = route.redirect
            if redirect is not None:  # forwards nothing: every caller the listener admits gets it
                loc = ((b"location", redirect.location.encode()),)
                return self._local(Answer(redirect.status, b"", loc))
            if gen.enforced[self.listener]:
                access = gen.access
                assert access is not None
                denied = access.denial(route.name, self.caller, req.method, path)
                if denied is not None:  # an audit listener forwards it (logged), as Istio's
                    audit = gen.audit[self.listener]  # dry run
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
        else:
            route, target = self.route, self.target
        assert target is not None
        plan = gen.plan(target)
        if phase <= _AFTER_DELAY:
            assert route is not None
            if phase != _ROUTE:
                router = gen.routers[self.listener]
            fault = route.fault
            if fault is not None and fault.abort_status and router.chance(fault.abort_percent):
                return self._local(Answer(fault.abort_status, FAULT_BODY))
            bucket = plan.bucket
            if bucket is not None:
                wait = bucket.try_acquire()
                if wait is not None:
                    return self._limited(wait)
            if plan.hashing:
                lb = gen.clusters[target.service].load_balancer
                self.hash_key = request_hash_key(lb, req.header, req.conn.client_ip)
            mirror = route.mirror
            if mirror is not None and router.chance(mirror.percent):
                self.mirror = mirror
                self.state = MIRRORING
                return MIRROR
        now = gen.clock()
        policy = target.retries
        if phase <= _TRIES:  # the retry budget counts the request; the route timeout starts
            if policy is not None:
                budget = plan.budget
                if budget is not None:
                    budget.record_request(now)
            breaker = self.breaker = plan.breaker
            upload = req.body
            timeout = target.timeout_s
            deadline = now + timeout if upload is None else request_deadline(upload, now, timeout)
            deadline = self.deadline = min(deadline, self.grpc_deadline)
        else:
            breaker, deadline = self.breaker, self.deadline
        if phase <= _ADMIT:  # each try is admitted by the breaker (a retry again, as Envoy)
            if deadline == INF:  # the body was still arriving: has it ended by now?
                deadline = self.deadline = request_deadline(req.body, now, target.timeout_s)
            if not self.holding:
                verdict = breaker.admit()
                if verdict is not None:
                    if verdict != "wait":
                        return self._local(OVERLOADED)
                    # The route timeout covers the pending time too (as Envoy's).
                    self.wait_until = min(deadline, now + target.timeout_s)
                    self.pending = PendingSlot()  # queued now, before the next admission
                    breaker.enqueue(self.pending.wake, breaker.clock() + self.wait_until - now)
                    self.state = QUEUED
                    return WAIT
                self.holding = True
        # The try: an endpoint not tried yet where the eligible set allows.
        upstreams = gen.upstreams
        picked = upstreams.pick(target.service, target.subset, self.hash_key, self.exclude)
        if picked is None:
            return self._local(self.last)
        self.picked = picked
        self.tries += 1
        remaining = deadline - now
        if remaining == INF:  # the route timeout starts when the body is complete
            remaining = target.timeout_s
        per_try = self.per_try = (
            min(policy.per_try_timeout_s, remaining) if policy is not None else remaining
        )
        upstreams.begin(picked)
        self.begun = True
        self.state = TRYING
        if per_try <= 0:  # no time left for this try
            return self.outcome(FAILED, "timeout")
        if not self.head:  # the upstream head, the same for every try (a mirror's is given)
            assert route is not None
            ops = gen.header_ops.get(route.name) or gen.ops(route)
            self.head = request_head(req, route, self.path, self.query, ops[0])
        if self.grpc_deadline != INF:  # the caller's grpc-timeout, less the time spent
            self.head = grpc.with_timeout(self.head, per_try)
        return TRY

    def _limited(self, wait: float) -> int:
        self.gen.metrics.inc_rate_limited(self.route_name)
        retry_after = b"%d" % max(1, int(wait + 0.999)) if wait != INF else b"3600"
        return self._local(Answer(429, b"rate limited\n", ((b"retry-after", retry_after),)))

    def outcome(self, event: int, result: int | str) -> int:
        """HEAD (``result`` a response status) or FAILED (``result`` the outcome), also
        called directly by drivers: the try ended. Count it, tell outlier detection, then
        retry, respond or answer locally."""
        if self.state != TRYING:
            self._refuse(event)
        responded = event == HEAD
        picked = self.picked
        assert picked is not None
        gen = self.gen
        if not responded and result == STALE:  # (a status is an int: compiled code compares
            self._end_try()  # a union by a generic call, skipped for the common answer)
            if self.stale_retry:  # retried once on a fresh connection, not counted as a try
                self.stale_retry = False
                self.tries -= 1
                return self.begin(_PICK)
            result = "reset"
        gen.metrics.inc_upstream(picked.service, picked.endpoint.address, result)
        # nothing to retry for
        gone = self.req.conn.closed or (not responded and result == CLIENT_TIMEOUT)
        if not gone and picked.service in gen.outlier:
            gen.upstreams.report(picked, result)
        # (Statuses below 400 meet no retry condition unless a trailers-only gRPC status came
        # with them: the common answer skips the check.)
        if (
            not isinstance(result, int) or result >= 400 or self.grpc_status > 0
        ) and self.retry_allowed(result, responded, gone):
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
        target = self.target
        assert target is not None
        policy = target.retries
        if gone or policy is None:
            return False
        if responded and result < 400 and self.grpc_status <= 0:  # type: ignore[operator]
            return False
        body = self.req.body
        if (
            self.tries > policy.attempts
            or (body is not None and not body.replayable)
            or not retryable(policy, self.req.method, result, self.grpc, self.grpc_status)
            or self.deadline - self.gen.clock() <= 0
        ):
            return False
        budget = self.gen.budgets.get(id(target))
        return budget is not None and budget.try_retry()

    def _retry(self, result: int | str, responded: bool) -> int:
        target = self.target
        assert target is not None
        policy = target.retries
        assert policy is not None
        self.exclude = self.exclude | {self.picked.endpoint.address}
        self.gen.metrics.inc_retry(target.service)
        # What to answer if no endpoint is left for the next try: this try's failure; after a
        # response that is retried, "no healthy endpoint" (that response is dropped).
        self.last = NO_ENDPOINT if responded else failure_answer(result)  # type: ignore[arg-type]
        self.grpc_status = -1  # the next try's own
        delay = backoff_delay(self.tries, policy.backoff_base_s, policy.backoff_max_s, self.gen.rng)
        self._end_try()
        self._release()  # free during the backoff, as in Envoy
        self.delay = min(delay, max(0.0, self.deadline - self.gen.clock()))
        self.state = BACKING_OFF
        return BACKOFF

    def streamed(self, _event: int = STREAMED, _value: int | str = 0) -> int:
        """STREAMED, also called directly: the response went through; everything held is
        given back (:meth:`close`, inlined: once per request)."""
        if self.state != RESPONDING:
            self._refuse(STREAMED)
        if self.begun:
            self.begun = False
            self.gen.upstreams.end(self.picked)
        if self.holding:
            self.holding = False
            self.breaker.release()
        self.state = ENDED
        return DONE

    # ---- ending -------------------------------------------------------------------------

    def _local(self, answer: Answer) -> int:
        if self.grpc and answer.status >= 400:
            self.grpc_status = grpc.status_for_http(answer.status)
            answer = grpc_answer(answer, self.grpc_status)
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
        if self.begun:
            self._end_try()
        if self.holding:
            self._release()
        pending, self.pending = self.pending, None
        if pending is not None and not self.breaker.cancel(pending.wake) and pending.granted:
            self.breaker.release()  # handed a slot after the driver stopped waiting
        self.state = ENDED

    def account(self, duration_s: float) -> None:
        """Count the finished request in ``meshgen_requests_total`` and its duration (nothing
        for a request that got no status: it failed inside the proxy)."""
        status = self.status
        if status:
            route, target = self.route, self.target
            self.gen.metrics.observe_request(
                self.listener,
                route.name if route is not None else "",
                target.service if target is not None else "",
                (target.subset or "") if target is not None else "",
                status,
                duration_s,
                grpc.status_label(status, self.grpc_status) if self.grpc else "",
            )


_Handler = Callable[[Attempt, int, "int | str"], int]
_TABLE: list[list[_Handler | None]] = [[None] * len(EVENT_NAMES) for _ in STATE_NAMES]
TRANSITIONS: Final[dict[tuple[int, int], _Handler]] = {
    (NEW, START): Attempt._start,
    (NEW, FORWARD): Attempt._begin,
    (DELAYING, WOKE): Attempt._woke,
    (MIRRORING, MIRRORED): Attempt._begin,
    (QUEUED, GRANTED): Attempt._queued,
    (QUEUED, EXPIRED): Attempt._queued,
    (TRYING, HEAD): Attempt.outcome,
    (TRYING, FAILED): Attempt.outcome,
    (BACKING_OFF, WOKE): Attempt._woke,
    (RESPONDING, STREAMED): Attempt.streamed,
}
for (_state, _event), _handler in TRANSITIONS.items():
    _TABLE[_state][_event] = _handler
