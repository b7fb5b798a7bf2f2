"""Upstreams: the one facade the proxy and the in-process client call to choose an endpoint.

Theory of operation
-------------------
Per service the facade keeps the discovered endpoint tuple, the active-health state and the
outlier detector of each address, and an in-flight counter keyed by *address* (so it survives
endpoint-set swaps and balancer rebuilds; an address that disappears keeps its counter until its
last request ends). Any change that can alter who is eligible (new endpoint set, a health flip,
an ejection or its return) bumps the service's ``version``. ``pick`` looks up the balancer of
``(service, subset)`` stamped with the current version; only when the version moved does it
recompute the eligible tuple (subset labels -> health and ejection -> :func:`failover_select`)
and fetch the balancer built for exactly that tuple from a small cache, building it only if
that tuple was never seen (a flapping endpoint does not rebuild a maglev table each time).

Choice order for ``pick(service, subset, ...)`` (docs/reference.md, "Failover order"):

1. eligible endpoints of the subset (or of the whole service when ``subset`` is None);
2. none, but the service still has a healthy endpoint (in another subset): None -> 503,
   no fallback to other subsets;
3. the whole service has no healthy endpoint: its ``backup`` service, picked with
   ``subset=None`` (a subset name belongs to its own service; Envoy does the same with a
   backup cluster), following the backup chain (cycles are cut) until one has an endpoint;
4. otherwise None -> 503.

``exclude`` holds addresses already tried; a retry goes elsewhere when the eligible set allows.
The asyncio shell (``start``/``stop``) runs one refresh loop per DNS service, one
:class:`~.prober.Prober` for every active check (spread, keep-alive, bounded: see prober.py),
and one outlier review loop per service with outlier detection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from ..policy.tls import UpstreamTls
from ..tables import Cluster, Endpoint, HealthCheck, Tables
from .balancers import Balancer, make_balancer
from .discovery import DnsSource, Source, make_source
from .health import HealthState, OutlierDetector, failover_select
from .prober import Prober

# Outcomes the proxy reports; any other string also counts as a local (5xx-like) failure.
Outcome = int | Literal["connect-failure", "reset", "timeout"] | str
BALANCER_CACHE_SIZE: Final = 32
log = logging.getLogger("meshgen.health")


class MetricsSink(Protocol):
    """The part of ``metrics.Metrics`` this module calls."""

    def set_endpoint_healthy(self, service: str, endpoint: str, healthy: bool) -> None: ...

    def inc_ejection(self, service: str, endpoint: str) -> None: ...

    def forget_endpoint(self, service: str, endpoint: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Picked:
    """The chosen endpoint; ``service`` is the service that owns it (may be a backup). ``key``
    is its connection pool's key, ``service/address`` (derived once: read on every try)."""

    service: str
    endpoint: Endpoint
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.service}/{self.endpoint.address}")


@dataclass(eq=False)
class _Service:
    cluster: Cluster
    source: Source
    check: HealthCheck | None
    outlier: OutlierDetector | None
    endpoints: tuple[Endpoint, ...] = ()
    states: dict[str, HealthState] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    version: int = 0
    picks: dict[str | None, tuple[int, Balancer | None]] = field(default_factory=dict)
    balancers: dict[tuple[tuple[Endpoint, ...], int], Balancer] = field(default_factory=dict)
    picked: dict[int, Picked] = field(default_factory=dict)  # id(endpoint) -> reusable Picked

    def healthy(self, address: str) -> bool:
        state = self.states.get(address)
        if state is not None and not state.healthy:
            return False
        return self.outlier is None or not self.outlier.is_ejected(address)


def _probe_state(svc: _Service, address: str) -> str:
    """Active health of one endpoint: ``passing``, ``failing`` or ``unchecked`` (no check)."""
    state = svc.states.get(address)
    if svc.check is None or state is None:
        return "unchecked"
    return "passing" if state.healthy else "failing"


def _upstream_tls(service: str, tls: ssl.SSLContext | UpstreamTls, tables: Tables) -> UpstreamTls:
    """Probes check identity like the proxy: a bare context gets the tables' SNI and SANs."""
    if isinstance(tls, UpstreamTls):
        return tls
    cfg = tables.client_tls.get(service)
    if cfg is None:
        return UpstreamTls(service, tls, None, (), verify=True)
    return UpstreamTls(service, tls, cfg.sni, cfg.subject_alt_names, cfg.verify)


def subset_members(
    cluster: Cluster, endpoints: tuple[Endpoint, ...], subset: str | None
) -> tuple[Endpoint, ...] | None:
    """The endpoints a route's ``subset`` of ``cluster`` selects (all for None or empty
    labels); None for a subset the cluster does not have."""
    if subset is None:
        return endpoints
    labels = next((s.labels for s in cluster.subsets if s.name == subset), None)
    if labels is None or not labels:
        return None if labels is None else endpoints
    want = set(labels)
    return tuple(e for e in endpoints if want.issubset(e.labels))


class Upstreams:
    """Endpoint choice for every service of a ``Tables`` (see the module docstring)."""

    def __init__(
        self,
        tables: Tables,
        *,
        metrics: MetricsSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        dns_nameservers: list[str] | None = None,
        dns_port: int = 53,
        client_ssl: Mapping[str, ssl.SSLContext | UpstreamTls] | None = None,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._tls = {
            name: _upstream_tls(name, ctx, tables) for name, ctx in (client_ssl or {}).items()
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._prober = Prober(self.on_probe_result, self._rng)
        self._services: dict[str, _Service] = {}
        for cluster in tables.clusters:
            od = tables.outlier_detection.get(cluster.name)
            svc = _Service(
                cluster=cluster,
                source=make_source(cluster.discovery, dns_nameservers, dns_port),
                check=tables.health_checks.get(cluster.name),
                outlier=OutlierDetector(od) if od is not None else None,
            )
            self._services[cluster.name] = svc
            self.apply_endpoints(cluster.name, svc.source.endpoints)

    # ---- decisions (synchronous, called per request) -------------------------------------

    def _balancer(self, svc: _Service, subset: str | None) -> Balancer | None:
        cached = svc.picks.get(subset)
        if cached is not None and cached[0] == svc.version:
            return cached[1]
        members = subset_members(svc.cluster, svc.endpoints, subset)
        balancer: Balancer | None = None
        if members:
            fo = svc.cluster.failover
            eligible = failover_select(members, svc.healthy, fo.zones, fo.panic_threshold)
            if eligible:
                group_weight = sum(e.weight for e in members)
                balancer = svc.balancers.get((eligible, group_weight))
                if balancer is None:
                    if len(svc.balancers) >= BALANCER_CACHE_SIZE:
                        svc.balancers.clear()
                    balancer = make_balancer(
                        svc.cluster.load_balancer, eligible, self._rng, svc.in_flight, group_weight
                    )
                    svc.balancers[(eligible, group_weight)] = balancer
        svc.picks[subset] = (svc.version, balancer)
        return balancer

    def pick(
        self,
        service: str,
        subset: str | None,
        hash_key: bytes | None,
        exclude: frozenset[str] = frozenset(),
    ) -> Picked | None:
        """Choose an endpoint; None means answer 503 (no healthy endpoint anywhere allowed)."""
        svc = self._services.get(service)
        if svc is None:
            return None
        cached = svc.picks.get(subset)
        if cached is not None and cached[0] == svc.version:
            balancer = cached[1]
        else:
            balancer = self._balancer(svc, subset)
        if balancer is None:
            if subset is not None and self._balancer(svc, None) is not None:
                return None
            seen = {service}
            while balancer is None:
                backup = svc.cluster.failover.backup
                if backup is None or backup in seen or backup not in self._services:
                    return None
                seen.add(backup)
                service, svc = backup, self._services[backup]
                balancer = self._balancer(svc, None)
        endpoint = balancer.pick(hash_key)
        if exclude and endpoint.address in exclude:
            endpoint = self._avoid(balancer, endpoint, exclude)
        picked = svc.picked.get(id(endpoint))
        return picked if picked is not None else Picked(service, endpoint)

    def _avoid(self, balancer: Balancer, first: Endpoint, exclude: frozenset[str]) -> Endpoint:
        for _ in range(min(len(balancer.endpoints), 8)):
            candidate = balancer.pick(None)
            if candidate.address not in exclude:
                return candidate
        rest = [e for e in balancer.endpoints if e.address not in exclude]
        return self._rng.choice(rest) if rest else first

    def begin(self, picked: Picked) -> None:
        """A request to ``picked`` started (least_request reads these counts)."""
        svc = self._services[picked.service]
        address = picked.endpoint.address
        svc.in_flight[address] = svc.in_flight.get(address, 0) + 1

    def end(self, picked: Picked) -> None:
        """A request to ``picked`` ended, whatever its outcome."""
        svc = self._services[picked.service]
        address = picked.endpoint.address
        left = svc.in_flight.get(address, 0) - 1
        if left > 0:
            svc.in_flight[address] = left
        elif left == 0:  # (-1: not counted; ``del`` is native where ``pop`` is a call)
            del svc.in_flight[address]

    def report(self, picked: Picked, outcome: Outcome) -> None:
        """Feed a live outcome to passive outlier detection."""
        svc = self._services[picked.service]
        if svc.outlier is None:
            return
        address = picked.endpoint.address
        if address not in svc.states and picked.endpoint not in svc.endpoints:
            return
        if svc.outlier.report(address, outcome, self._clock(), len(svc.endpoints)):
            svc.version += 1
            if self._metrics is not None:
                self._metrics.inc_ejection(svc.cluster.name, address)
                self._metrics.set_endpoint_healthy(svc.cluster.name, address, False)

    # ---- state changes (called by the loops; public so tests can drive them) -------------

    def apply_endpoints(self, service: str, endpoints: tuple[Endpoint, ...]) -> None:
        """Swap a service's endpoint set; health state of surviving addresses is kept."""
        svc = self._services[service]
        if endpoints == svc.endpoints:
            return
        new = {e.address for e in endpoints}
        old = {e.address for e in svc.endpoints}
        svc.endpoints = endpoints
        svc.picked = {id(e): Picked(service, e) for e in endpoints}
        svc.version += 1
        if svc.outlier is not None:
            svc.outlier.forget(new)
        for address in old - new:
            svc.states.pop(address, None)
            self._prober.remove(service, address)
            if self._metrics is not None:
                self._metrics.forget_endpoint(service, address)
        for ep in endpoints:
            if ep.address in old:
                continue
            if svc.check is not None:
                svc.states[ep.address] = HealthState(svc.check)
                self._prober.add(service, ep, svc.check, self._tls.get(service))
            if self._metrics is not None:
                self._metrics.set_endpoint_healthy(service, ep.address, True)

    def on_probe_result(self, service: str, address: str, ok: bool) -> None:
        """Feed one active-check result; a flip changes eligibility."""
        svc = self._services[service]
        state = svc.states.get(address)
        if state is None or not state.on_result(ok):
            return
        svc.version += 1
        verdict = "UP" if state.healthy else "DOWN"
        log.warning("service %s endpoint %s is %s (health check)", service, address, verdict)
        if self._metrics is not None:
            self._metrics.set_endpoint_healthy(service, address, svc.healthy(address))

    def review_outliers(self, service: str) -> list[str]:
        """Return expired ejections of ``service`` to rotation; the addresses returned."""
        svc = self._services[service]
        if svc.outlier is None:
            return []
        returned = svc.outlier.review(self._clock())
        if returned:
            svc.version += 1
            if self._metrics is not None:
                for address in returned:
                    self._metrics.set_endpoint_healthy(service, address, svc.healthy(address))
        return returned

    def inherit(self, old: Upstreams) -> None:
        """Carry over, from the generation a reload replaces, the health and ejection state of
        every endpoint that stays (same service and address): a reload must not send traffic to
        an endpoint already known dead. Endpoints that are new start healthy as usual."""
        for name, svc in self._services.items():
            prev = old._services.get(name)
            if prev is None:
                continue
            before = {e.address for e in prev.endpoints}
            for address in [e.address for e in svc.endpoints if e.address in before]:
                state, was = svc.states.get(address), prev.states.get(address)
                if state is not None and was is not None:
                    state.healthy, state.streak = was.healthy, was.streak
                if svc.outlier is not None and prev.outlier is not None:
                    svc.outlier.adopt(prev.outlier, address)
                if self._metrics is not None:
                    self._metrics.set_endpoint_healthy(name, address, svc.healthy(address))
            svc.version += 1

    # ---- asyncio shell --------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve DNS once, then start refresh loops, the prober and outlier-review loops."""
        dns = [(name, s) for name, s in self._services.items() if isinstance(s.source, DnsSource)]
        delays = await asyncio.gather(*(s.source.refresh() for _, s in dns))
        for (name, svc), delay in zip(dns, delays, strict=True):
            self.apply_endpoints(name, svc.source.endpoints)
            self._spawn(self._refresh_loop(name, svc, delay))
        self._prober.start()
        for name, svc in self._services.items():
            if svc.outlier is not None:
                self._spawn(self._review_loop(name, svc.outlier.policy.interval_s))

    async def stop(self) -> None:
        """Cancel every loop, close the prober's connections, and wait for them."""
        await self._prober.stop()
        tasks = list(self._tasks)
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _refresh_loop(self, name: str, svc: _Service, delay: float | None) -> None:
        while delay is not None:
            await asyncio.sleep(delay)
            delay = await svc.source.refresh()
            self.apply_endpoints(name, svc.source.endpoints)

    async def _review_loop(self, name: str, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.review_outliers(name)

    # ---- introspection --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state per service for ``/status`` and ``/config``."""
        out: dict[str, Any] = {}
        for name, svc in self._services.items():
            st = svc.source.status
            out[name] = {
                "discovery": {
                    "kind": st.kind,
                    "query": st.query,
                    "ok": st.ok,
                    "failures": st.failures,
                    "last_error": st.last_error,
                    "last_ttl": st.last_ttl,
                },
                "backup": svc.cluster.failover.backup,
                "healthy": sum(1 for e in svc.endpoints if svc.healthy(e.address)),
                "total": len(svc.endpoints),
                "endpoints": [
                    {
                        "address": e.address,
                        "weight": e.weight,
                        "zone": e.zone,
                        "labels": dict(e.labels),
                        "healthy": svc.healthy(e.address),
                        "health": _probe_state(svc, e.address),
                        "ejected": svc.outlier is not None and svc.outlier.is_ejected(e.address),
                        "in_flight": svc.in_flight.get(e.address, 0),
                    }
                    for e in svc.endpoints
                ],
            }
        return out
