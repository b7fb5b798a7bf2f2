"""Endpoint discovery: static lists and DNS (SRV, A, AAAA) with TTL refresh and last-known-good.

Theory of operation
-------------------
A source holds the current endpoint tuple of one service and a small status record
(:class:`DiscoveryStatus`) for ``/status`` and metrics. ``refresh()`` does one resolution,
updates the state and returns the delay until the next one; the caller's loop sleeps and calls
again. The decisions are pure functions:

* :func:`srv_endpoints`: only the lowest-priority SRV group is used (RFC 2782; other groups are
  standby), SRV weight becomes endpoint weight (0 -> 1, since endpoint weights are 1..65535),
  every address of a target becomes an endpoint with that target's port.
* :func:`refresh_delay`: ``max(1 s, min(refresh, TTL))`` (dnsmasq answers TTL 0 by default).
* :meth:`DnsSource.refresh`: a failure (timeout, SERVFAIL, NXDOMAIN, no answer, an answer
  with no usable address, or a whole resolution over :data:`RESOLVE_LIFETIME_S`: the query and
  the lookups of SRV targets without addresses in the answer, :data:`LOOKUPS_AT_ONCE` at a
  time) keeps the last known good set, counts the failure and retries after
  ``max(1 s, min(refresh, 5 s))``, as HAProxy's ``hold valid`` does. Before any good answer the
  set is empty and the status says why: the service answers 503, nothing crashes.

Endpoints are sorted by address so equal answers give equal tuples (and the balancer cache in
:mod:`.upstreams` hits). Swapping the tuple never touches in-flight requests: those are
accounted by address in :mod:`.upstreams`, not by set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from ..tables import DnsDiscovery, Endpoint, StaticDiscovery

FAILURE_RETRY_MAX_S: Final = 5.0
QUERY_LIFETIME_S: Final = 2.0
RESOLVE_LIFETIME_S: Final = 5.0
"""A whole resolution: the query and, for SRV, the lookups of targets the answer gave no address
for. Over it the resolution fails (the last good set stays), so a slow or hostile server never
holds up the start or the next refresh for long."""
LOOKUPS_AT_ONCE: Final = 16
"""SRV targets looked up at the same time (each with its A and AAAA queries)."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # lower-case, no trailing dot


@dataclass(slots=True)
class DiscoveryStatus:
    """What ``/status`` shows about a source. ``ok`` is False until the first good answer."""

    kind: str
    query: str = ""
    ok: bool = False
    failures: int = 0
    last_error: str | None = None
    last_ttl: float | None = None


def refresh_delay(refresh_s: float, ttl: float | None) -> float:
    """Seconds until the next resolution: ``max(1, min(refresh, ttl))``."""
    return max(1.0, refresh_s if ttl is None else min(refresh_s, ttl))


def srv_endpoints(
    records: Iterable[SrvRecord], addresses: Mapping[str, Iterable[str]]
) -> tuple[Endpoint, ...]:
    """Endpoints of the lowest-priority SRV group; ``addresses[target]`` are its IPs."""
    recs = list(records)
    if not recs:
        return ()
    best = min(r.priority for r in recs)
    found: dict[str, Endpoint] = {}
    for rec in recs:
        if rec.priority != best:
            continue
        for ip in addresses.get(rec.target, ()):
            ep = Endpoint(host=ip, port=rec.port, weight=min(65535, max(1, rec.weight)))
            found.setdefault(ep.address, ep)
    return tuple(found[a] for a in sorted(found))


def _name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class StaticSource:
    """The endpoints listed in mesh.yaml; never refreshes."""

    def __init__(self, spec: StaticDiscovery) -> None:
        self.endpoints: tuple[Endpoint, ...] = tuple(spec.endpoints)
        self.status = DiscoveryStatus(kind="static", ok=True)

    async def refresh(self) -> float | None:
        """Nothing to do: None means "no further refresh"."""
        return None


class DnsSource:
    """Resolves ``spec.query_name`` with dnspython; keeps the last known good set on failure."""

    def __init__(
        self, spec: DnsDiscovery, nameservers: list[str] | None = None, port: int = 53
    ) -> None:
        self.spec = spec
        self.endpoints: tuple[Endpoint, ...] = ()
        self.status = DiscoveryStatus(kind=f"dns {spec.record_type}", query=spec.query_name)
        resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            resolver.nameservers = list(nameservers)
            resolver.port = port
        resolver.lifetime = QUERY_LIFETIME_S
        self._resolver = resolver

    async def _addresses(self, target: str, additional: Mapping[str, list[str]]) -> list[str]:
        if target in additional:
            return additional[target]
        ips: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(target, rdtype, search=False)
            except dns.exception.DNSException:
                continue
            ips.extend(rr.address for rr in answer)
        return ips

    async def resolve(self) -> tuple[tuple[Endpoint, ...], float]:
        """One resolution: (endpoints, ttl). Raises ``dns.exception.DNSException`` on failure."""
        spec = self.spec
        answer = await self._resolver.resolve(spec.query_name, spec.record_type, search=False)
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else 0.0
        if spec.record_type != "SRV":
            port = spec.port or 0
            eps = {e.address: e for e in (Endpoint(host=rr.address, port=port) for rr in answer)}
            return tuple(eps[a] for a in sorted(eps)), ttl
        additional: dict[str, list[str]] = {}
        for rrset in answer.response.additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                additional.setdefault(_name(rrset.name), []).extend(rr.address for rr in rrset)
                ttl = min(ttl, float(rrset.ttl))
        records = [SrvRecord(rr.priority, rr.weight, rr.port, _name(rr.target)) for rr in answer]
        best = min((r.priority for r in records), default=0)
        targets = sorted({r.target for r in records if r.priority == best})
        slots = asyncio.Semaphore(LOOKUPS_AT_ONCE)

        async def lookup(target: str) -> list[str]:
            async with slots:
                return await self._addresses(target, additional)

        found = await asyncio.gather(*(lookup(t) for t in targets))
        return srv_endpoints(records, dict(zip(targets, found, strict=True))), ttl

    def _failed(self, error: str) -> float:
        self.status.failures += 1
        self.status.last_error = error
        return max(1.0, min(self.spec.refresh_s, FAILURE_RETRY_MAX_S))

    async def refresh(self) -> float | None:
        """Resolve once, update ``endpoints``/``status``; return the delay to the next refresh."""
        try:
            async with asyncio.timeout(RESOLVE_LIFETIME_S):
                endpoints, ttl = await self.resolve()
        except TimeoutError:
            return self._failed(f"Timeout: the resolution took over {RESOLVE_LIFETIME_S:g} s")
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        if not endpoints:
            return self._failed("answer holds no usable address")
        self.endpoints = endpoints
        self.status.ok = True
        self.status.last_error = None
        self.status.last_ttl = ttl
        return refresh_delay(self.spec.refresh_s, ttl)


Source = StaticSource | DnsSource


def make_source(
    spec: StaticDiscovery | DnsDiscovery, nameservers: list[str] | None, port: int
) -> Source:
    """The source for a cluster's discovery spec."""
    if isinstance(spec, StaticDiscovery):
        return StaticSource(spec)
    return DnsSource(spec, nameservers, port)
