"""Access control: may this caller send this request through this route? (pure, no I/O)

Theory of operation (docs/reference.md, Access rules):

* Rules are enforced only on listeners whose TLS asks for client certificates
  (``optional`` / ``required``, see :func:`enforced_on`); there, everything is denied unless a rule
  allows it. A caller without a (verified, SPIFFE) identity is ``None`` and matches no rule,
  not even ``from: "*"``.
* A rule grants its ``source`` (a caller name, or ``*`` = any caller with an identity) the
  ``methods`` (empty: all; compared case-sensitively, as HTTP methods are) on paths under its
  ``paths`` (empty: all) of one service.
* ``paths`` are prefixes of the *normalised* path (``paths.normalize_path``), on segment
  boundaries: ``/charge`` covers ``/charge`` and ``/charge/x`` but not ``/chargeback``;
  ``/charge/`` covers ``/charge/x`` only. The caller normalises, so ``/charge/../admin`` is
  checked as ``/admin``.
* A request on a route is allowed only if it is allowed for **every** service the route can
  send to (:func:`route_services`: its ``to`` services, its mirror, and their ``backup``
  chains), so the decision does not depend on which split branch or failover is picked.
* A route that reaches no service (a ``redirect``) is never asked about: it forwards nothing,
  so the proxy answers it before access, to every caller the listener admits.
* :class:`AccessPolicy` precomputes, per route and per named caller, the grants of each
  service, so a decision is a few dict lookups and prefix tests. :meth:`AccessPolicy.matrix`
  reduces the rules to the effective allow matrix for ``meshgen explain`` and the build output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ..tables import AccessRule, Cluster, Listener, Route, Tables

ANY: Final = "*"


def enforced_on(listener: Listener) -> bool:
    """Whether access rules (deny-by-default) apply to requests arriving on ``listener``."""
    return listener.tls is not None and listener.tls.client_certificates != "none"


def path_under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` itself or below it, on a segment boundary."""
    if path == prefix:
        return True
    return path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def route_services(route: Route, clusters: Mapping[str, Cluster]) -> tuple[str, ...]:
    """Every service a request on ``route`` can reach: targets, mirror, backups (in that order)."""
    pending = [t.service for t in route.to]
    if route.mirror is not None:
        pending.append(route.mirror.service)
    return _with_backups(pending, clusters)


def listener_services(listener: Listener, clusters: Mapping[str, Cluster]) -> tuple[str, ...]:
    """Every service a connection to a tcp ``listener`` can reach: its ``to`` or ``sni``
    services and their backups."""
    pending = [*(t.service for t in listener.to), *(r.service for r in listener.sni)]
    return _with_backups(pending, clusters)


def _with_backups(pending: list[str], clusters: Mapping[str, Cluster]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for service in pending:
        while service not in out:
            out[service] = None
            cluster = clusters.get(service)
            backup = cluster.failover.backup if cluster is not None else None
            if backup is None:
                break
            service = backup
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Grant:
    """Methods (empty: any) on paths under ``prefix``."""

    methods: frozenset[str]
    prefix: str

    def permits(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and path_under(path, self.prefix)

    def within(self, other: Grant) -> bool:
        """Everything this grant permits, ``other`` permits too."""
        methods_ok = not other.methods or (bool(self.methods) and self.methods <= other.methods)
        return methods_ok and path_under(self.prefix, other.prefix)

    def meet(self, other: Grant) -> Grant | None:
        """The grant permitting exactly what both permit, or ``None`` when that is nothing."""
        if not self.methods:
            methods = other.methods
        elif not other.methods:
            methods = self.methods
        else:
            methods = self.methods & other.methods
            if not methods:
                return None
        if path_under(other.prefix, self.prefix):
            return Grant(methods, other.prefix)
        if path_under(self.prefix, other.prefix):
            return Grant(methods, self.prefix)
        return None


def rule_grants(rule: AccessRule) -> tuple[Grant, ...]:
    methods = frozenset(m.upper() for m in rule.methods)
    return tuple(Grant(methods, p) for p in (rule.paths or ("/",)))


def _simplify(grants: Iterable[Grant]) -> tuple[Grant, ...]:
    """Drop duplicates and grants contained in another; sorted for deterministic output."""
    unique = sorted(set(grants), key=lambda g: (g.prefix, sorted(g.methods)))
    kept = [
        g for g in unique if not any(o is not g and g.within(o) and not o.within(g) for o in unique)
    ]
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class MatrixRow:
    """What ``caller`` (a name, or ``*`` for any other caller) may do on ``route``."""

    route: str
    caller: str
    services: tuple[str, ...]
    grants: tuple[Grant, ...]  # empty: denied


@dataclass(frozen=True, slots=True)
class PartialAccess:
    """``caller`` is allowed to some services of ``route`` but not others (a build warning)."""

    route: str
    caller: str
    allowed: tuple[str, ...]
    denied: tuple[str, ...]


class AccessPolicy:
    """Access rules compiled for fast per-request decisions."""

    def __init__(
        self,
        rules: Iterable[AccessRule],
        routes: Iterable[Route] = (),
        clusters: Iterable[Cluster] = (),
    ) -> None:
        self._grants: dict[tuple[str, str], tuple[Grant, ...]] = {}
        for rule in rules:
            key = (rule.service, rule.source)
            self._grants[key] = self._grants.get(key, ()) + rule_grants(rule)
        self.callers: tuple[str, ...] = tuple(
            sorted({source for _, source in self._grants if source != ANY})
        )
        by_name = {c.name: c for c in clusters}
        self.routes: dict[str, tuple[str, ...]] = {
            r.name: route_services(r, by_name) for r in routes if r.redirect is None
        }
        # route -> caller (or ANY) -> per service: the grants that caller holds there.
        self._per_route: dict[str, dict[str, tuple[tuple[Grant, ...], ...]]] = {
            route: {
                caller: tuple(self.grants_for(caller, s) for s in services)
                for caller in (*self.callers, ANY)
            }
            for route, services in self.routes.items()
        }

    @classmethod
    def from_tables(cls, tables: Tables) -> AccessPolicy:
        return cls(tables.access, tables.routes, tables.clusters)

    def grants_for(self, caller: str, service: str) -> tuple[Grant, ...]:
        """Grants of ``caller`` on ``service``: its own rules plus the ``*`` rules."""
        own = self._grants.get((service, caller), ()) if caller != ANY else ()
        return own + self._grants.get((service, ANY), ())

    def allowed(
        self, caller: str | None, method: str, path: str, services: tuple[str, ...]
    ) -> bool:
        """A rule allows ``caller`` ``method`` on normalised ``path`` for each of ``services``."""
        if caller is None or not services:
            return False
        return all(
            any(g.permits(method, path) for g in self.grants_for(caller, s)) for s in services
        )

    def connection_denial(self, caller: str | None, services: tuple[str, ...]) -> str | None:
        """A tcp listener's verdict by identity alone (rules for tcp services name no methods
        or paths): ``None`` when rules let ``caller`` reach each of ``services`` (all of
        them, so a weighted split never refuses at random), else the first service they do
        not open."""
        for service in services:
            if caller is None or not self.grants_for(caller, service):
                return service
        return None if services else ""

    def route_allowed(self, route: str, caller: str | None, method: str, path: str) -> bool:
        """:meth:`allowed` for the services of ``route``, from the precomputed table."""
        return self.denial(route, caller, method, path) is None

    def denial(self, route: str, caller: str | None, method: str, path: str) -> str | None:
        """``None`` when allowed, else the service to count the denial under.

        That is the first destination of ``route`` no rule opens for this request, or ``""``
        for a route with no destination (a redirect) or an unknown route.
        """
        per_caller = self._per_route.get(route)
        if per_caller is None:
            return ""
        services = self.routes[route]
        if caller is None:
            return services[0]
        per_service = per_caller.get(caller) or per_caller[ANY]
        for service, grants in zip(services, per_service, strict=True):
            if not any(g.permits(method, path) for g in grants):
                return service
        return None

    def matrix(self) -> tuple[MatrixRow, ...]:
        """The effective allow matrix: per route and caller, what every destination permits."""
        rows: list[MatrixRow] = []
        for route, services in self.routes.items():
            for caller in (*self.callers, ANY):
                acc: tuple[Grant, ...] = (Grant(frozenset(), "/"),) if services else ()
                for service in services:
                    met = (a.meet(b) for a in acc for b in self.grants_for(caller, service))
                    acc = _simplify(g for g in met if g is not None)
                rows.append(MatrixRow(route, caller, services, acc))
        return tuple(rows)

    def partial(self) -> tuple[PartialAccess, ...]:
        """Routes where a caller is granted some destination services but not all of them."""
        out: list[PartialAccess] = []
        for route, services in self.routes.items():
            for caller in (*self.callers, ANY):
                ok = tuple(s for s in services if self.grants_for(caller, s))
                if ok and len(ok) < len(services):
                    denied = tuple(s for s in services if s not in ok)
                    out.append(PartialAccess(route, caller, ok, denied))
        return tuple(out)
