"""The sidecar proxy: per request, route -> policy -> endpoint -> forward (with retries) -> stream.

Theory of operation: a :class:`Generation` holds everything derived from one ``Tables`` value
(routers, buckets, breakers, budgets, access policy, upstreams). Each request reads the current
generation once when it starts, so a reload (``Proxy.swap``) changes what *new* requests see
while in-flight ones finish on the old. The order of decisions is Envoy's: route (404), split
(the weighted destination is chosen here, so every later local answer counts under that service
and subset, as Envoy attributes it to the chosen cluster), redirect (it forwards nothing, so
it answers every caller the listener admits, as HAProxy's does), access (403), route rate
limit (429), fault (delay/abort), service rate limit (429), mirror, then tries with retries,
each admitted by the circuit breaker (wait in its pending queue, or 503 with
``x-meshgen-overloaded: true``). The response head is committed only
after a try is accepted, so a failed try can still be retried; after that the body streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import IO

from .access import AccessPolicy, enforced_on
from .audit import AuditLog
from .balancers import request_hash_key
from .exchange import Exchange, ForwardResult
from .fastpath import FastTry
from .guard import REASONS, ListenerGuard
from .heads import CompiledOps
from .http1 import Request, ServerConnection, simple_response
from .metrics import Metrics
from .mirror import Mirrors
from .paths import split_target
from .resilience import CircuitBreaker, RetryBudget, TokenBucket
from .router import CompiledRoute, Router
from .tables import Cluster, Listener, Tables
from .tls import TlsContexts, peer_identity
from .upstreams import Upstreams

log = logging.getLogger("meshgen.proxy")
_ID_PREFIX = os.urandom(8).hex().encode()
TARGET_CACHE_SIZE = 4096
_OVERLOADED = [(b"x-meshgen-overloaded", b"true")]  # Envoy: x-envoy-overloaded


class Generation:
    """Everything derived from one table generation; immutable apart from counters."""

    def __init__(
        self,
        tables: Tables,
        upstreams: Upstreams,
        metrics: Metrics,
        tls: TlsContexts | None,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tables = tables
        self.upstreams = upstreams
        self.tls = tls
        self.rng = rng
        self.clusters: dict[str, Cluster] = {c.name: c for c in tables.clusters}
        self.routers = {
            lst.name: Router.for_listener(tables.routes, lst, rng) for lst in tables.listeners
        }
        self.enforced = {lst.name: enforced_on(lst) for lst in tables.listeners}
        self.audit = {lst.name: lst.access == "audit" for lst in tables.listeners}
        self.audit_log = AuditLog(log, clock)
        self.access = AccessPolicy.from_tables(tables) if any(self.enforced.values()) else None
        self.route_buckets = {
            r.name: TokenBucket(r.rate_limit.requests_per_second, r.rate_limit.burst, clock)
            for r in tables.routes
            if r.rate_limit is not None
        }
        self.service_buckets = {
            c.name: TokenBucket(c.rate_limit.requests_per_second, c.rate_limit.burst, clock)
            for c in tables.clusters
            if c.rate_limit is not None
        }
        self.breakers = {
            c.name: CircuitBreaker(c.circuit_breaker, _circuit_gauge(metrics, c.name), clock)
            for c in tables.clusters
        }
        self.services = frozenset(self.clusters)
        self.limited_routes = frozenset(
            r.name
            for r in tables.routes
            if r.redirect is None
            and (r.rate_limit is not None or any(t.service in self.service_buckets for t in r.to))
        )
        metrics.declare(self.services, self.limited_routes)
        self.budgets = retry_budgets(tables, clock)
        self.header_ops: dict[str, tuple[CompiledOps, CompiledOps]] = {}
        # Services whose balancer hashes requests (``balancers.request_hash_key`` reads them)
        # and those with outlier detection (``Upstreams.report`` acts only for them).
        self.hashing = frozenset(
            c.name for c in tables.clusters if c.load_balancer.policy in ("ring_hash", "maglev")
        )
        self.outlier = frozenset(tables.outlier_detection)
        self.in_flight = 0
        self.fast_routes: dict[str, bool] = {}  # route name -> fast path eligible (lazily)

    def fast_route(self, cr: CompiledRoute) -> bool:
        """Whether requests of ``cr`` may take the callback fast path (``fastpath.py``): no
        step before forwarding that may wait or answer locally, a positive timeout."""
        route = cr.route
        ok = self.fast_routes.get(route.name)
        if ok is None:
            ok = self.fast_routes[route.name] = (
                route.redirect is None
                and route.rate_limit is None
                and route.fault is None
                and route.mirror is None
                and bool(cr.targets)
                and all(
                    t.service not in self.service_buckets
                    and t.timeout_s > 0
                    and (t.retries is None or t.retries.per_try_timeout_s > 0)
                    for t in cr.targets
                )
            )
        return ok


def retry_budgets(tables: Tables, clock: Callable[[], float]) -> dict[int, RetryBudget]:
    """The retry budget of each retrying route destination, keyed by ``id`` of its ``Target``
    (the tables' objects, which live as long as the generation; an int key keeps the per-request
    lookup as cheap as a service-name key). One pool per service; a route that wrote its own
    ``retries.budget`` gets one pool per destination service of its own."""
    pools: dict[tuple[str, str | None], RetryBudget] = {}
    budgets: dict[int, RetryBudget] = {}
    for r in tables.routes:
        for t in r.to:
            p = t.retries
            if p is None:
                continue
            key = (t.service, p.budget_route)
            pool = pools.get(key)
            if pool is None:
                pool = pools[key] = RetryBudget(p.budget_ratio, p.budget_min_per_second, clock)
            budgets[id(t)] = pool
    return budgets


def _circuit_gauge(metrics: Metrics, service: str) -> Callable[[bool], None]:
    return lambda is_open: metrics.set_circuit_open(service, is_open)


class ListenerContext:
    """What a listener's connections need: its name and the proxy (for the live generation)."""

    __slots__ = ("listener", "name", "proxy")

    def __init__(self, proxy: Proxy, listener: Listener) -> None:
        self.proxy = proxy
        self.listener = listener
        self.name = listener.name


class Proxy:
    """Serves requests for every listener of the current generation."""

    def __init__(
        self, generation: Generation, metrics: Metrics, access_log: IO[str] | None = None
    ) -> None:
        self.generation = generation
        self.metrics = metrics
        self.access_log = access_log
        self.exchange = Exchange(metrics)
        self.mirrors = Mirrors(self.exchange)
        self.connections: set[ServerConnection] = set()
        self.guards: dict[str, ListenerGuard] = {}
        self.draining = False
        self._ids = 0
        self._targets: dict[bytes, tuple[str, str] | None] = {}

    def swap(self, generation: Generation) -> Generation:
        """New requests use ``generation`` from now on; returns the previous one."""
        old, self.generation = self.generation, generation
        for listener in generation.tables.listeners:
            if listener.name in self.guards:
                self.guard(listener)
        return old

    def protocol(self, listener: Listener) -> Callable[[], ServerConnection]:
        ctx = ListenerContext(self, listener)
        guard = self.guard(listener)
        return lambda: ServerConnection(self.handle, ctx, guard, self.connections, self.fast)

    def guard(self, listener: Listener) -> ListenerGuard:
        """The listener's guard (one per name for the process; a reload updates its limits)."""
        guard = self.guards.get(listener.name)
        if guard is None:
            guard = self.guards[listener.name] = ListenerGuard(
                listener.name, listener.limits, self.metrics.inc_rejected
            )
            self.metrics.declare_listener(listener.name, REASONS)
        guard.limits = listener.limits
        return guard

    def start_drain(self) -> None:
        """Answer with ``connection: close`` from now on and close idle keep-alive connections."""
        self.draining = True
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
            elif conn.active is not None:
                conn.active.keep_alive = False

    def _request_id(self, req: Request) -> bytes:
        """A new request id for a request that came without one (sent upstream too)."""
        self._ids += 1
        rid = req.request_id = b"%s-%016x" % (_ID_PREFIX, self._ids)
        req.headers.append((b"x-request-id", rid))
        return rid

    def _split(self, target: bytes) -> tuple[str, str] | None:
        """:func:`split_target`, memoised (the caller looks in the cache first): clients
        repeat the same few targets. Invalid ones are cached too, as None."""
        cache = self._targets
        if len(cache) >= TARGET_CACHE_SIZE:
            cache.clear()
        split = cache[target] = split_target(target)
        return split

    def fast(self, req: Request) -> bool:
        """Take ``req`` on the callback fast path, or return False having changed nothing
        (the order of decisions is that of :meth:`handle`)."""
        if req.upgrade or req.expect_continue or self.draining:
            return False
        gen = self.generation
        ctx: ListenerContext = req.conn.listener  # type: ignore[assignment]
        if gen.enforced[ctx.name]:
            return False
        rid = req.request_id  # (``handle`` keeps one made here)
        if rid is None:
            rid = self._request_id(req)
        split = self._targets.get(req.target)
        if split is None:
            split = self._split(req.target)
            if split is None:
                return False
        path, query = split
        router = gen.routers[ctx.name]
        cr = router.match(req.host, path, req.method, req.header)
        if cr is None or not gen.fast_route(cr):
            return False
        gen.in_flight += 1
        start = time.monotonic()
        target = router.pick(cr)
        assert target is not None
        service = target.service
        cluster = gen.clusters[service]
        hash_key = (
            request_hash_key(cluster.load_balancer, req.header, req.conn.client_ip)
            if service in gen.hashing
            else None
        )
        route = cr.route
        FastTry(
            self, gen, req, ctx.name, route, target, cluster, path, query, hash_key, rid, start
        ).run()
        return True

    def answer(self, req: Request, result: ForwardResult, rid: bytes) -> int:
        """The status of a forwarded request, answering locally when it has a local body."""
        if result.local is None:
            return result.status
        extra = _OVERLOADED if result.overloaded else None
        return self._local(req, result.status, result.local, rid, extra)

    def account(
        self,
        gen: Generation,
        req: Request,
        listener: str,
        route: str,
        service: str,
        subset: str,
        status: int,
        start: float,
    ) -> None:
        """A request ended: in-flight count, metrics, access log."""
        gen.in_flight -= 1
        duration = time.monotonic() - start
        if status:
            self.metrics.observe_request(listener, route, service, subset, status, duration)
        if self.access_log is not None:
            self._log(listener, req, route, service, status, duration)

    async def handle(self, req: Request) -> None:
        gen = self.generation
        gen.in_flight += 1
        ctx: ListenerContext = req.conn.listener  # type: ignore[assignment]
        start = time.monotonic()
        route_name = service = subset = ""
        status = 0
        if self.draining:
            req.keep_alive = False
        try:
            rid = req.request_id
            if rid is None:
                rid = self._request_id(req)
            split = self._targets.get(req.target)
            if split is None:
                split = self._split(req.target)
            if split is None:
                req.keep_alive = False
                status = self._local(req, 400, b"bad request target\n", rid)
                return
            path, query = split
            router = gen.routers[ctx.name]
            cr = router.match(req.host, path, req.method, req.header)
            if cr is None:
                body = f"no route for host {req.host!r}\n".encode("utf-8", "replace")
                status = self._local(req, 404, body, rid)
                return
            route = cr.route
            route_name = route.name
            # The destination is chosen first, so every local answer from here on counts under
            # the service (and subset) the route would have sent the request to.
            target = router.pick(cr)
            if target is not None:
                service, subset = target.service, target.subset or ""
            if route.redirect is not None:  # forwards nothing: every admitted caller gets it
                loc = route.redirect.location.encode()
                status = self._local(req, route.redirect.status, b"", rid, [(b"location", loc)])
                return
            if gen.enforced[ctx.name] and not self._allowed(gen, req, route_name, path):
                status = self._local(req, 403, b"access denied\n", rid)
                return
            assert target is not None
            if route.rate_limit is not None:
                wait = gen.route_buckets[route_name].try_acquire()
                if wait is not None:
                    status = self._limited(req, route_name, wait, rid)
                    return
            fault = route.fault
            if fault is not None:
                if fault.delay_s > 0 and router.chance(fault.delay_percent):
                    await asyncio.sleep(fault.delay_s)
                if fault.abort_status and router.chance(fault.abort_percent):
                    status = self._local(req, fault.abort_status, b"fault injected\n", rid)
                    return
            bucket = gen.service_buckets.get(service)
            if bucket is not None:
                wait = bucket.try_acquire()
                if wait is not None:
                    status = self._limited(req, route_name, wait, rid)
                    return
            cluster = gen.clusters[service]
            hash_key = (
                request_hash_key(cluster.load_balancer, req.header, req.conn.client_ip)
                if service in gen.hashing
                else None
            )
            if route.mirror is not None and router.chance(route.mirror.percent):
                self.mirrors.mirror(gen, route.mirror, req, path, query)
            result: ForwardResult = await self.exchange.forward(
                gen, req, route, target, cluster, path, query, hash_key, rid
            )
            status = self.answer(req, result, rid)
        finally:
            self.account(gen, req, ctx.name, route_name, service, subset, status, start)

    def _allowed(self, gen: Generation, req: Request, route: str, path: str) -> bool:
        """Access control on listeners that check callers (deny-by-default); counts denials.
        On an ``access: audit`` listener a denied request is logged and let through."""
        assert gen.access is not None
        ssl_obj = req.conn.transport.get_extra_info("ssl_object") if req.conn.transport else None
        caller = peer_identity(ssl_obj, gen.tables.mesh.name) if ssl_obj is not None else None
        denied = gen.access.denial(route, caller, req.method, path)
        if denied is None:
            return True
        listener: ListenerContext = req.conn.listener  # type: ignore[assignment]
        audit = gen.audit[listener.name]
        self.metrics.inc_denied(
            listener.name, caller or "", denied, "audit" if audit else "enforce"
        )
        if audit:
            gen.audit_log.denied(listener.name, caller, req.method, path, route, denied)
        return audit

    def _limited(self, req: Request, route: str, wait: float, rid: bytes) -> int:
        self.metrics.inc_rate_limited(route)
        retry_after = b"%d" % max(1, int(wait + 0.999)) if wait != float("inf") else b"3600"
        return self._local(req, 429, b"rate limited\n", rid, [(b"retry-after", retry_after)])

    def _local(
        self,
        req: Request,
        status: int,
        body: bytes,
        rid: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        """Answer locally; a request whose body is still unread closes the connection."""
        if req.started:
            return status
        req.started = True
        if req.body is not None and not req.body.complete:
            req.keep_alive = False
        headers = [(b"x-request-id", rid)]
        if extra:
            headers.extend(extra)
        if req.keep_alive and req.version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        if req.method == "HEAD":
            body = b""
        req.conn.send(simple_response(status, body, headers, close=not req.keep_alive))
        return status

    def _log(
        self, listener: str, req: Request, route: str, service: str, status: int, duration: float
    ) -> None:
        assert self.access_log is not None
        line = json.dumps(
            {
                "time": time.time(),
                "listener": listener,
                "client": req.conn.client_ip,
                "method": req.method,
                "target": req.target.decode("latin-1"),
                "host": req.host,
                "route": route,
                "service": service,
                "status": status,
                "duration_s": round(duration, 6),
                "request_id": (req.header("x-request-id") or ""),
            }
        )
        self.access_log.write(line + "\n")
        if self.access_log is sys.stderr:
            self.access_log.flush()
