"""The callback fast path: a simple proxied request handled without a coroutine, Future or Task.

Why: on one core the three task wake-ups per request (the connection's serve loop, the wait for
the response head, the handler) cost about as much as all the Python routing work. The common
case needs none of them: a request without a body on a simple route (no redirect, rate limit,
fault, mirror or access control), admitted at once by the circuit breaker, sent on a pooled
keep-alive connection; its response head (usually with the whole body) arrives in one read and
is written back from that ``data_received``.

Theory of operation: ``ServerConnection`` offers each request to :meth:`Proxy.fast` before
queueing it; the proxy decides eligibility without side effects, then a :class:`FastTry` does
what :meth:`Exchange.forward` does for its first try, in the same order (budget, admission,
pick, try, outcome metrics and outlier report, retry decision). Wherever the request needs to
wait (breaker pending queue, a new connection, a stale connection's free retry, a retry's
backoff, a streaming body) the state so far goes to ``forward`` as an
:class:`~.exchange.Resume` in a task, which continues exactly where the fast path stopped.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .exchange import (
    _NO_ENDPOINT,
    _NO_EXCLUDE,
    _OVERLOADED,
    ForwardResult,
    Resume,
    _broken,
    _failure,
    _result,
)
from .heads import request_head
from .http1 import Request, UpstreamConnection
from .resilience import backoff_delay, retryable
from .tables import Cluster, Route, Target
from .upstreams import Picked

if TYPE_CHECKING:
    from .proxy import Generation, Proxy


class FastTry:
    """One request on the fast path, from admission to the last byte or a hand-over."""

    __slots__ = ("address", "cluster", "conn", "deadline", "gen", "hash_key", "head",
                 "listener", "path", "picked", "proxy", "query", "req", "rid", "route", "start",
                 "target")  # fmt: skip

    def __init__(
        self,
        proxy: Proxy,
        gen: Generation,
        req: Request,
        listener: str,
        route: Route,
        target: Target,
        cluster: Cluster,
        path: str,
        query: str,
        hash_key: bytes | None,
        rid: bytes,
        start: float,
    ) -> None:
        self.proxy = proxy
        self.gen = gen
        self.req = req
        self.listener = listener
        self.route = route
        self.target = target
        self.cluster = cluster
        self.path = path
        self.query = query
        self.hash_key = hash_key
        self.rid = rid
        self.start = start
        self.deadline = 0.0
        self.head = b""
        self.address = ""
        self.picked: Picked | None = None
        self.conn: UpstreamConnection | None = None

    def run(self) -> None:
        gen, req, target = self.gen, self.req, self.target
        exchange = self.proxy.exchange
        loop = req.conn.loop
        assert loop is not None
        self.deadline = loop.time() + target.timeout_s
        policy = target.retries
        if policy is not None:
            budget = gen.budgets.get(id(target))
            if budget is not None:
                budget.record_request()
        ops = gen.header_ops.get(self.route.name)
        rops = ops[0] if ops is not None else exchange._ops(gen, self.route)[0]
        self.head = request_head(req, self.route, self.path, self.query, rops)
        breaker = gen.breakers[target.service]
        verdict = breaker.admit()
        if verdict is not None:
            if verdict != "wait":
                self._finish(_OVERLOADED)
            else:  # the coroutine waits in the pending queue (admit again says "wait")
                self._forward(Resume(self.deadline, self.head, holding=False))
            return
        upstreams = gen.upstreams
        picked = upstreams.pick(target.service, target.subset, self.hash_key, _NO_EXCLUDE)
        if picked is None:
            breaker.release()
            self._finish(_NO_ENDPOINT)
            return
        entry = exchange._keys.get(id(picked))
        if entry is None or entry[0] is not picked:
            entry = exchange._key(picked)
        conn = exchange.pool.take(entry[1])
        if conn is None:  # a new connection: the coroutine connects
            self._forward(Resume(self.deadline, self.head, holding=True, first=picked))
            return
        self.picked, self.address, self.conn = picked, entry[2], conn
        upstreams.begin(picked)
        conn.begin(self.head, False, req.conn, self._on_head)
        req.conn.on_close = conn.abort
        conn.arm(min(policy.per_try_timeout_s, target.timeout_s) if policy else target.timeout_s)

    def _on_head(self, exc: Exception | None) -> None:
        """The response head arrived (exc None) or the try broke off: as ``forward``'s loop."""
        conn, picked, gen, req, target = self.conn, self.picked, self.gen, self.req, self.target
        assert conn is not None and picked is not None
        conn.disarm()
        exchange = self.proxy.exchange
        upstreams = gen.upstreams
        breaker = gen.breakers[target.service]
        ok: UpstreamConnection | None = conn
        result: int | str
        if exc is not None:
            ok = None
            result = _broken(req, conn)
            if result == "stale":  # retried once on a fresh connection, not counted as a try
                upstreams.end(picked)
                self._forward(Resume(self.deadline, self.head, holding=True, stale_retry=False))
                return
        else:
            result = conn.status
        exchange.metrics.inc_upstream(picked.service, self.address, result)
        client_gone = req.conn.closed  # nothing to retry for, no endpoint to blame
        if picked.service in gen.outlier and not client_gone:
            upstreams.report(picked, result)
        policy = target.retries
        loop = req.conn.loop
        assert loop is not None
        can_retry = (
            not client_gone
            and policy is not None
            and (ok is None or result >= 400)  # type: ignore[operator]
            and policy.attempts > 0
            and retryable(policy, req.method, result)
            and self.deadline - loop.time() > 0
        )
        budget = gen.budgets.get(id(target)) if policy is not None else None
        if not (can_retry and budget is not None and budget.try_retry()):
            if ok is None:
                upstreams.end(picked)
                breaker.release()
                self._finish(_failure(result))
                return
            sops = gen.header_ops[self.route.name][1]
            rest = exchange._respond(req, ok, sops, target.idle_timeout_s)
            if rest is not None:
                self._detach(self._tail(rest, ok.status))
                return
            upstreams.end(picked)
            breaker.release()
            self._account(ok.status)  # a forwarded response: nothing to answer locally
            req.conn.request_done(req)
            return
        assert policy is not None
        if ok is not None:
            exchange.pool.discard(ok)
        exchange.metrics.inc_retry(target.service)
        last = _failure(result) if ok is None else _result(ok.status)
        delay = backoff_delay(1, policy.backoff_base_s, policy.backoff_max_s, gen.rng)
        upstreams.end(picked)
        breaker.release()  # free during the backoff, as in ``forward``
        exclude = _NO_EXCLUDE | {self.address}
        self._forward(Resume(self.deadline, self.head, False, None, 1, exclude, True, last, delay))

    async def _tail(self, rest: Coroutine[Any, Any, None], status: int) -> ForwardResult:
        """A streaming body or tunnel: await it, then give back the endpoint and the slot."""
        picked = self.picked
        assert picked is not None
        try:
            await rest
        finally:
            self.gen.upstreams.end(picked)
            self.gen.breakers[self.target.service].release()
        return _result(status)

    def _forward(self, resume: Resume) -> None:
        self._detach(
            self.proxy.exchange.forward(
                self.gen,
                self.req,
                self.route,
                self.target,
                self.cluster,
                self.path,
                self.query,
                self.hash_key,
                self.rid,
                resume,
            )
        )

    def _detach(self, work: Coroutine[Any, Any, ForwardResult]) -> None:
        """Go on in a task; the connection's next request waits for it."""
        conn = self.req.conn
        assert conn.loop is not None
        conn.loop.create_task(conn.finish_detached(self.req, self._then_account(work)))

    async def _then_account(self, work: Coroutine[Any, Any, ForwardResult]) -> None:
        status = 0
        try:
            status = self.proxy.answer(self.req, await work, self.rid)
        finally:
            self._account(status)

    def _finish(self, result: ForwardResult) -> None:
        self._account(self.proxy.answer(self.req, result, self.rid))
        self.req.conn.request_done(self.req)

    def _account(self, status: int) -> None:
        target = self.target
        self.proxy.account(
            self.gen,
            self.req,
            self.listener,
            self.route.name,
            target.service,
            target.subset or "",
            status,
            self.start,
        )
