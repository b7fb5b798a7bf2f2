"""One proxied exchange: tries with retries until response headers, then the streamed response.

Theory of operation: a *try* is pick endpoint -> pooled connection -> request head (+ body from the
replay buffer or stream) -> wait for response headers under ``min(per_try_timeout, what is left of
timeout)``. The route's ``timeout`` counts from the end of the request (:func:`request_deadline`);
while its body is still arriving only ``idle_timeout`` applies, to bytes either way, so a slow
upload that keeps moving is never cut. A try ends in an outcome: a status, or ``connect-failure`` /
``reset`` / ``timeout`` / ``client-timeout`` (the client stopped sending its body: 408, no retry,
the endpoint not blamed). Retryable outcomes (``resilience.retryable``), within the attempt count,
the retry budget and the deadline, and only while the request body can be resent (not yet sent, or
kept whole in the 64 KiB replay buffer), start another try after a jittered backoff, avoiding
endpoints already tried. Every try is first admitted by the service's circuit breaker
(``resilience.CircuitBreaker``): with all ``max_connections`` busy it waits in the FIFO pending
queue until a slot is handed over or the request ``timeout`` passes (504, as Envoy's route timeout
covers pending time); a full queue or ``max_requests`` reached gives a fast 503 with
``x-meshgen-overloaded: true`` (Envoy: ``x-envoy-overloaded``), never retried. The slot is held
until the response body is through and given up during a retry's backoff. A stale pooled connection
that closes before answering is retried once on a fresh connection without counting as a try. The
accepted response's head is written, then its body is piped by the protocols (flow-controlled) while
an idle watchdog enforces ``idle_timeout``.

Hot path (one request, one core): the try deadline is the upstream connection's long-lived
timer, re-armed only when it fires early (no timer per request); a response that arrived whole
with its head is written in one ``write`` without another coroutine or watchdog; header skip sets
and ``set`` lines are compiled once per route, the X-Forwarded-* lines once per downstream
connection (``heads.py``); mirroring lives in ``mirror.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .heads import REQUEST_SKIP, VIA_LINE, CompiledOps, request_head
from .http1 import HOP_BY_HOP, Request, UpstreamConnection, status_line
from .metrics import Metrics
from .pool import ConnectError, Pool
from .resilience import CircuitBreaker, backoff_delay, retryable
from .tables import Cluster, Route, Target
from .upstreams import Picked

if TYPE_CHECKING:
    from .proxy import Generation

log = logging.getLogger("meshgen.proxy")


@dataclass(frozen=True, slots=True)
class ForwardResult:
    status: int
    local: bytes | None = None  # the proxy answers itself with this body
    overloaded: bool = False  # refused by the circuit breaker (x-meshgen-overloaded: true)


_NO_EXCLUDE: frozenset[str] = frozenset()


class Resume:
    """Where the callback fast path (``fastpath.py``) hands a request to :meth:`Exchange.forward`:
    the loop state at that point. ``first`` is an endpoint already picked (and admitted) that
    needs a new connection; ``delay`` a retry's backoff still to sleep (no slot held)."""

    __slots__ = ("deadline", "delay", "exclude", "first", "head", "holding", "last", "stale_retry",
                 "tries")  # fmt: skip

    def __init__(
        self,
        deadline: float,
        head: bytes,
        holding: bool,
        first: Picked | None = None,
        tries: int = 0,
        exclude: frozenset[str] = _NO_EXCLUDE,
        stale_retry: bool = True,
        last: ForwardResult | None = None,
        delay: float | None = None,
    ) -> None:
        self.deadline = deadline
        self.head = head
        self.holding = holding
        self.first = first
        self.tries = tries
        self.exclude = exclude
        self.stale_retry = stale_retry
        self.last = last if last is not None else _NO_ENDPOINT
        self.delay = delay


class Exchange:
    """Forwarding and mirroring over one shared connection pool."""

    def __init__(self, metrics: Metrics, pool: Pool | None = None) -> None:
        self.metrics = metrics
        self.pool = pool if pool is not None else Pool()
        self._keys: dict[int, tuple[Picked, str, str]] = {}

    def _ops(self, gen: Generation, route: Route) -> tuple[CompiledOps, CompiledOps]:
        ops = gen.header_ops.get(route.name)
        if ops is None:
            ops = (
                CompiledOps.of(route.request_headers, REQUEST_SKIP),
                CompiledOps.of(route.response_headers, HOP_BY_HOP),
            )
            gen.header_ops[route.name] = ops
        return ops

    def _key(self, picked: Picked) -> tuple[Picked, str, str]:
        """(picked, pool key, address), cached by ``id(picked)`` (upstreams reuses them)."""
        if len(self._keys) >= 4096:
            self._keys.clear()
        address = picked.endpoint.address
        entry = (picked, f"{picked.service}/{address}", address)
        self._keys[id(picked)] = entry  # holds ``picked``: its id cannot be reused meanwhile
        return entry

    async def forward(
        self,
        gen: Generation,
        req: Request,
        route: Route,
        target: Target,
        cluster: Cluster,
        path: str,
        query: str,
        hash_key: bytes | None,
        rid: bytes,
        resume: Resume | None = None,
    ) -> ForwardResult:
        loop = req.conn.loop
        assert loop is not None
        policy = target.retries
        max_tries = 1 + (policy.attempts if policy is not None else 0)
        budget = gen.budgets.get(id(target)) if policy is not None else None
        ops = gen.header_ops.get(route.name)
        rops, sops = ops if ops is not None else self._ops(gen, route)
        first: Picked | None = None
        delay: float | None = None
        if resume is None:
            deadline = request_deadline(req, loop.time(), target.timeout_s)
            if budget is not None:
                budget.record_request()
            if req.expect_continue and req.body is not None and not req.body.complete:
                req.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = request_head(req, route, path, query, rops)
            exclude = _NO_EXCLUDE  # endpoints already tried
            tries = 0
            stale_retry = True
            last = _NO_ENDPOINT
            holding = False  # this request holds one of the breaker's active slots
        else:
            deadline, head, holding = resume.deadline, resume.head, resume.holding
            first, delay, tries, exclude = resume.first, resume.delay, resume.tries, resume.exclude
            stale_retry, last = resume.stale_retry, resume.last
        upstreams = gen.upstreams
        breaker = gen.breakers[target.service]
        try:
            if delay is not None:  # a retry's backoff, begun on the fast path
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            while True:
                if deadline == INF:  # the body was still arriving: has it ended by now?
                    deadline = request_deadline(req, loop.time(), target.timeout_s)
                if not holding:
                    verdict = breaker.admit()
                    if verdict is not None:
                        if verdict != "wait":
                            return _OVERLOADED
                        queued = min(deadline, loop.time() + target.timeout_s)
                        if not await wait_for_slot(breaker, loop, queued):
                            return _QUEUE_TIMEOUT
                    holding = True
                picked: Picked | None
                if first is not None:
                    picked, first = first, None
                else:
                    picked = upstreams.pick(target.service, target.subset, hash_key, exclude)
                if picked is None:
                    return last
                tries += 1
                entry = self._keys.get(id(picked))
                if entry is None or entry[0] is not picked:
                    entry = self._key(picked)
                key, address = entry[1], entry[2]
                remaining = deadline - loop.time()
                if remaining == INF:  # the timeout starts when the body is complete
                    remaining = target.timeout_s
                per_try = (
                    min(policy.per_try_timeout_s, remaining) if policy is not None else remaining
                )
                upstreams.begin(picked)
                try:
                    # A pooled connection is used inline, without the ``_try`` coroutine.
                    conn = self.pool.take(key) if per_try > 0 else None
                    idle = target.idle_timeout_s
                    if conn is None:
                        outcome, conn = await self._try(gen, req, picked, key, head, per_try, idle)
                    elif not self._start(req, conn, head, per_try, idle):
                        outcome, conn = "reset", None
                    else:
                        waiting = conn
                        try:
                            await waiting.headers_future  # type: ignore[misc]
                            outcome = ""
                        except ConnectionResetError:
                            outcome, conn = _broken(req, waiting), None
                        finally:
                            waiting.disarm()
                    if outcome == "stale" and stale_retry:
                        stale_retry = False
                        tries -= 1
                        continue
                    result: int | str = "reset" if outcome == "stale" else outcome
                    if conn is not None:
                        result = conn.status
                    self.metrics.inc_upstream(picked.service, address, result)
                    # Nothing to retry for, no endpoint to blame:
                    client_gone = req.conn.closed or result == CLIENT_TIMEOUT
                    if picked.service in gen.outlier and not client_gone:
                        upstreams.report(picked, result)
                    # Statuses below 400 satisfy no retry condition (resilience.retryable).
                    can_retry = (
                        not client_gone
                        and policy is not None
                        and (conn is None or result >= 400)  # type: ignore[operator]
                        and tries < max_tries
                        and (req.body is None or req.body.replayable)
                        and retryable(policy, req.method, result)
                        and deadline - loop.time() > 0
                    )
                    if not (can_retry and budget is not None and budget.try_retry()):
                        if conn is None:
                            return _failure(result)
                        rest = self._respond(req, conn, sops, target.idle_timeout_s)
                        if rest is not None:
                            await rest
                        return _result(conn.status)
                    assert policy is not None
                    exclude = exclude | {address}
                    if conn is not None:
                        self.pool.discard(conn)
                    if req.body is not None:
                        req.body.detach()
                    self.metrics.inc_retry(target.service)
                    last = _failure(result) if conn is None else _result(conn.status)
                    delay = backoff_delay(
                        tries, policy.backoff_base_s, policy.backoff_max_s, gen.rng
                    )
                finally:
                    upstreams.end(picked)
                # A retry goes through admission again (as in Envoy): the slot is free
                # during the backoff.
                holding = False
                breaker.release()
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        finally:
            if holding:
                breaker.release()

    async def _connect(
        self, gen: Generation, picked: Picked, key: str, timeout: float
    ) -> UpstreamConnection | None:
        """A new connection to ``picked`` within the connect timeout; None on failure."""
        cluster = gen.clusters[picked.service]
        breaker = gen.breakers[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            return await self.pool.open(
                key,
                picked.endpoint,
                min(cluster.connect_timeout_s, timeout),
                tls,
                breaker.try_connection,
                breaker.release_connection,
            )
        except ConnectError as exc:
            log.debug("connect %s: %s", picked.endpoint.address, exc)
            return None

    async def _try(
        self,
        gen: Generation,
        req: Request,
        picked: Picked,
        key: str,
        head: bytes,
        timeout: float,
        idle: float,
    ) -> tuple[str, UpstreamConnection | None]:
        """One attempt on a new connection until response headers; returns (failure outcome,
        None) or ("", conn). (``forward`` does the same inline on a pooled connection.)"""
        if timeout <= 0:
            return "timeout", None
        conn = await self._connect(gen, picked, key, timeout)
        if conn is None:
            return "connect-failure", None
        if not self._start(req, conn, head, timeout, idle):
            return "reset", None
        try:
            await conn.headers_future  # type: ignore[misc]
        except ConnectionResetError:
            return _broken(req, conn), None
        finally:
            conn.disarm()
        return "", conn

    def _start(
        self, req: Request, conn: UpstreamConnection, head: bytes, timeout: float, idle: float
    ) -> bool:
        """Send the head (and the body so far) on ``conn`` and arm the try's deadline (while
        the body is still arriving: ``idle``, then ``timeout`` from its end); False when the
        body cannot be resent (the connection is discarded)."""
        conn.begin(head, req.chunked, req.conn, upgrade=req.upgrade)
        body = req.body
        if body is not None and not body.attach(conn):
            self.pool.discard(conn)
            return False
        req.conn.on_close = conn.abort
        if body is not None and not body.complete:
            conn.arm_upload(idle, timeout)
        else:
            conn.arm(timeout)
        return True

    def _respond(
        self, req: Request, conn: UpstreamConnection, sops: CompiledOps, idle: float
    ) -> Coroutine[None, None, None] | None:
        """Send the response head (with the body received so far) in one write.

        Returns a coroutine to await when more is to come (a streaming body, a tunnel); most
        responses are complete by now and need no coroutine, no watchdog, no task switch.
        """
        status = conn.status
        down = req.conn
        skip = sops.skip
        parts = [status_line(status)]
        for k, v in conn.headers:  # one flat join: cheaper than a formatted line per header
            if k not in skip:
                parts += (k, b": ", v, b"\r\n")
        parts.append(sops.tail)
        parts.append(VIA_LINE)
        framed = conn.has_length and b"content-length" not in skip
        head_only = req.method == "HEAD" or status in (204, 304)
        upgraded = status == 101 and conn.upgraded is not None and req.upgrade
        chunked = False
        if upgraded:
            for k, v in conn.headers:
                if k == b"upgrade":
                    parts.append(b"connection: upgrade\r\nupgrade: %s\r\n" % v)
            req.keep_alive = False
        elif not framed and not head_only:
            if req.version == "1.1":
                chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                req.keep_alive = False
        if not req.keep_alive and not upgraded:
            parts.append(b"connection: close\r\n")
        elif req.version == "1.0" and not upgraded:  # HTTP/1.0 keeps it only when told so
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        req.started = True
        if framed and not head_only and not upgraded:
            parts += conn.take_early()
        down.send(b"".join(parts))
        if upgraded:
            return self._tunnel(req, conn)
        if req.method == "HEAD":
            self.pool.discard(conn)  # llhttp cannot be told the response has no body: never reuse
            return None
        sink: Callable[[bytes], None]
        if chunked:
            write = down.write

            def sink(data: bytes) -> None:
                if data:
                    write(b"%x\r\n%s\r\n" % (len(data), data))

        else:
            sink = down.write
        conn.start_body(sink)
        if not conn.finished:
            return self._stream(req, conn, chunked, idle)
        self._finish(req, conn, chunked)
        return None

    def _finish(self, req: Request, conn: UpstreamConnection, chunked: bool) -> None:
        """The body is through: end the chunked framing, pool or close the connection."""
        down = req.conn
        down.on_close = None
        if chunked:
            down.write(b"0\r\n\r\n")
        if conn.keep_alive and (req.body is None or req.body.complete):
            self.pool.release(conn)
        else:
            self.pool.discard(conn)

    async def _stream(
        self, req: Request, conn: UpstreamConnection, chunked: bool, idle: float
    ) -> None:
        """Pipe the rest of the body (flow-controlled); abort when idle for ``idle`` seconds."""
        down = req.conn
        loop = down.loop
        assert loop is not None
        down.upstream = conn
        if down.write_paused:
            conn.set_reading(False)
        watchdog: asyncio.TimerHandle | None = None

        def check_idle() -> None:
            nonlocal watchdog
            left = conn.last_activity + idle - loop.time()
            if left <= 0:
                log.info("idle_timeout: closing a stalled response")
                conn.abort()
            else:
                watchdog = loop.call_later(left, check_idle)

        watchdog = loop.call_later(idle, check_idle)
        try:
            await conn.done
        except ConnectionResetError:
            req.keep_alive = False
            down.close()  # the body is cut short; the client must see it
            return
        finally:
            watchdog.cancel()
            down.upstream = None
            down.on_close = None
        self._finish(req, conn, chunked)

    async def _tunnel(self, req: Request, conn: UpstreamConnection) -> None:
        """After a 101: raw bytes both ways until either side closes."""
        down = req.conn
        assert conn.transport is not None and conn.done is not None
        if conn.upgraded:
            down.write(conn.upgraded)
        down.start_tunnel(conn.transport)
        down.upstream = conn
        conn.start_body(down.write)
        with contextlib.suppress(ConnectionResetError):
            await conn.done
        down.close()


INF = float("inf")
CLIENT_TIMEOUT = "client-timeout"  # the outcome of a try whose upload the client let stall
_NO_ENDPOINT = ForwardResult(503, b"no healthy endpoint\n")
_OVERLOADED = ForwardResult(503, b"upstream overflow\n", overloaded=True)
_QUEUE_TIMEOUT = ForwardResult(504, b"upstream timeout\n")
_RESULTS: dict[int, ForwardResult] = {}


async def admit(
    breaker: CircuitBreaker, loop: asyncio.AbstractEventLoop, deadline: float
) -> ForwardResult | None:
    """Admission of one try (the proxy inlines the fast case): None once a slot is held (the
    caller must ``breaker.release()``), else the local answer: a fast 503 (overloaded) or 504
    when ``deadline`` (loop time) passes in the pending queue. The in-process client uses it."""
    verdict = breaker.admit()
    if verdict is None:
        return None
    if verdict != "wait":
        return _OVERLOADED
    return None if await wait_for_slot(breaker, loop, deadline) else _QUEUE_TIMEOUT


async def wait_for_slot(
    breaker: CircuitBreaker, loop: asyncio.AbstractEventLoop, deadline: float
) -> bool:
    """Wait in the breaker's pending queue: True once a slot is handed over, False when
    ``deadline`` (loop time) passes first."""
    remaining = deadline - loop.time()
    if remaining <= 0:
        return False
    fut: asyncio.Future[bool] = loop.create_future()

    def wake(granted: bool) -> bool:
        if fut.done():
            return False
        fut.set_result(granted)
        return True

    def expire() -> None:
        if breaker.cancel(wake):
            wake(False)

    breaker.enqueue(wake, breaker.clock() + remaining)
    timer = loop.call_later(remaining, expire)
    try:
        return await fut
    except asyncio.CancelledError:
        granted = fut.done() and not fut.cancelled() and fut.result()
        if not breaker.cancel(wake) and granted:
            breaker.release()
        raise
    finally:
        timer.cancel()


def _result(status: int) -> ForwardResult:
    """The (shared, read-only) result of a forwarded response with ``status``."""
    result = _RESULTS.get(status)
    if result is None:
        result = _RESULTS[status] = ForwardResult(status)
    return result


def request_deadline(req: Request, now: float, timeout: float) -> float:
    """When the route's ``timeout`` ends: that long after the end of the request (``now`` for
    a request without a body, whose head just ended), or :data:`INF` while the body is still
    arriving (``idle_timeout`` guards an upload, however long it takes)."""
    body = req.body
    if body is None:
        return now + timeout
    return body.ended_at + timeout if body.complete else INF


def _broken(req: Request, conn: UpstreamConnection) -> str:
    """The outcome of a try whose connection broke before the response head: ``timeout``,
    :data:`CLIENT_TIMEOUT` (the upload stalled on the client's side), ``stale`` (a reused
    connection the server had closed; retried once for free) or ``reset``. A try we aborted
    because the client went away is a ``reset``, never replayed."""
    if conn.timed_out:
        return CLIENT_TIMEOUT if conn.client_stalled else "timeout"
    if req.conn.closed:
        return "reset"
    body = req.body
    if conn.reused and not conn.received and (body is None or body.replayable):
        if body is not None:
            body.detach()
        return "stale"
    return "reset"


def _failure(outcome: int | str) -> ForwardResult:
    if outcome == "timeout":
        return ForwardResult(504, b"upstream timeout\n")
    if outcome == CLIENT_TIMEOUT:  # as Envoy's route idle_timeout before the response head
        return ForwardResult(408, b"request timeout\n")
    if outcome == "connect-failure":
        return ForwardResult(503, b"upstream connect error\n")
    return ForwardResult(502, b"upstream reset\n")
