"""A table generation: everything the request machine consults, derived once from one ``Tables``.

Theory of operation: a :class:`Generation` holds the routers, access policy, rate-limit buckets,
circuit breakers, retry budgets, compiled header operations and upstreams of one ``Tables``
value. Each request reads the current generation once when it starts, so a reload (the proxy
swaps generations) changes what *new* requests see while requests in flight finish on the old
one; ``in_flight`` tells the runtime when the old one may stop. The in-process client has a
generation of its own with one router over every route (listener ``""``) and no listeners.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..codec.upstream_conn import HOP_BY_HOP
from ..policy.access import AccessPolicy, enforced_on
from ..policy.audit import AuditLog
from ..policy.resilience import CircuitBreaker, RetryBudget, TokenBucket
from ..policy.router import Router
from ..tables import Cluster, Mirror, Route, Tables, Target
from .counters import Counters
from .heads import REQUEST_SKIP, CompiledOps

if TYPE_CHECKING:
    from ..policy.tls import TlsContexts
    from ..upstream.upstreams import Upstreams

CLIENT: Final = ""  # the in-process client's "listener": no listener, every route
log = logging.getLogger("meshgen.proxy")


class Plan:
    """What the request machine consults for one route destination (a ``Target``): its
    service's circuit breaker, rate-limit bucket and balancer kind, and its retry budget.
    Looked up once per request, by the target's ``id``, instead of four lookups by name."""

    __slots__ = ("breaker", "bucket", "budget", "hashing")

    def __init__(self, gen: Generation, target: Target) -> None:
        self.breaker = gen.breakers[target.service]
        self.bucket = gen.service_buckets.get(target.service)
        self.budget = gen.budgets.get(id(target))
        self.hashing = target.service in gen.hashing


class Generation:
    """Everything derived from one table generation; immutable apart from counters."""

    def __init__(
        self,
        tables: Tables,
        upstreams: Upstreams,
        metrics: Counters,
        tls: TlsContexts | None,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        *,
        client: bool = False,
    ) -> None:
        self.tables = tables
        self.clock = clock  # one clock for buckets, breakers, budgets and request deadlines
        self.upstreams = upstreams
        self.metrics = metrics
        self.tls = tls
        self.rng = rng
        self.clusters: dict[str, Cluster] = {c.name: c for c in tables.clusters}
        if client:
            self.routers = {CLIENT: Router(tables.routes, rng)}
            self.enforced = {CLIENT: False}
            self.audit = {CLIENT: False}
        else:
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
        # Services whose balancer hashes requests and those with outlier detection: the
        # machine computes a hash key, or reports an outcome, only for them.
        self.hashing = frozenset(
            c.name for c in tables.clusters if c.load_balancer.policy in ("ring_hash", "maglev")
        )
        self.outlier = frozenset(tables.outlier_detection)
        self.in_flight = 0
        # (request, response) header operations per route name, compiled on first use:
        # ``header_ops.get(name) or ops(route)``.
        self.header_ops: dict[str, tuple[CompiledOps, CompiledOps]] = {}
        self._shadows: dict[tuple[str, str | None], Target] = {}
        # Keyed by ``id`` of the tables' targets (and the shadows'), which live as long as
        # this generation: :meth:`plan`.
        self._plans = {id(t): Plan(self, t) for r in tables.routes for t in r.to}

    def plan(self, target: Target) -> Plan:
        """``target``'s :class:`Plan` (made anew for a target that is not this generation's,
        as a test's may be)."""
        plan = self._plans.get(id(target))
        return plan if plan is not None else Plan(self, target)

    def ops(self, route: Route) -> tuple[CompiledOps, CompiledOps]:
        """The route's (request, response) header operations, compiled on first use."""
        ops = self.header_ops.get(route.name)
        if ops is None:
            ops = self.header_ops[route.name] = (
                CompiledOps.of(route.request_headers, REQUEST_SKIP),
                CompiledOps.of(route.response_headers, HOP_BY_HOP),
            )
        return ops

    def shadow_target(self, mirror: Mirror) -> Target:
        """Where a mirror's copies go: the service's own timeouts, never retried."""
        key = (mirror.service, mirror.subset)
        target = self._shadows.get(key)
        if target is None:
            cluster = self.clusters[mirror.service]
            target = self._shadows[key] = Target(
                mirror.service, mirror.subset, 0, cluster.timeout_s, cluster.idle_timeout_s, None
            )
            self._plans[id(target)] = Plan(self, target)
        return target


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


def _circuit_gauge(metrics: Counters, service: str) -> Callable[[bool], None]:
    return lambda is_open: metrics.set_circuit_open(service, is_open)
