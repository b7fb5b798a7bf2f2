"""Pure request routing: (host, normalised path, method, headers) -> route -> weighted target.

Theory of operation: every matcher is compiled once when a :class:`Router` is built (a table
generation), so a request costs one dict lookup for its host, then a few cheap predicate calls
per candidate route in file order; the first match wins (reference.md). Routes without a host
condition are merged, in file order, into every host's candidate list, so an unknown host only
scans the host-less routes. The weighted split uses an injectable ``random.Random``; tests seed
it. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..tables import HeaderMatch, Listener, PathMatchKind, Route, Target

HeaderGetter = Callable[[str], "str | None"]


def normalize_host(raw: str) -> str:
    """Host header -> lower-case name without port or trailing dot (``[::1]:80`` -> ``::1``)."""
    host = raw.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end > 0 else host
    else:
        colon = host.rfind(":")
        if colon >= 0 and host.count(":") == 1:
            host = host[:colon]
    return host[:-1] if host.endswith(".") else host


def _header_predicate(m: HeaderMatch) -> Callable[[HeaderGetter], bool]:
    name, value = m.name, m.value
    if m.kind == "present":
        return lambda get: get(name) is not None
    if m.kind == "exact":
        return lambda get: get(name) == value
    if m.kind == "prefix":

        def prefix(get: HeaderGetter) -> bool:
            got = get(name)
            return got is not None and got.startswith(value)

        return prefix
    fullmatch = re.compile(value).fullmatch

    def regex(get: HeaderGetter) -> bool:
        got = get(name)
        return got is not None and fullmatch(got) is not None

    return regex


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its matchers compiled and the cumulative weights of its targets."""

    route: Route
    path_kind: PathMatchKind
    path: str  # a prefix ("" for any path: "/" too), the exact path, or the regex's source
    path_regex: re.Pattern[str] | None
    methods: frozenset[str]
    headers: tuple[Callable[[HeaderGetter], bool], ...]
    targets: tuple[Target, ...]  # weight > 0 only
    cumulative: tuple[int, ...]

    @classmethod
    def compile(cls, route: Route) -> CompiledRoute:
        m = route.match
        targets = tuple(t for t in route.to if t.weight > 0)
        cumulative: list[int] = []
        total = 0
        for t in targets:
            total += t.weight
            cumulative.append(total)
        return cls(
            route=route,
            path_kind=m.path_kind,
            path="" if m.path_kind == "prefix" and m.path == "/" else m.path,
            path_regex=re.compile(m.path) if m.path_kind == "regex" else None,
            methods=frozenset(x.upper() for x in m.methods),
            headers=tuple(_header_predicate(h) for h in m.headers),
            targets=targets,
            cumulative=tuple(cumulative),
        )

    def path_matches(self, path: str) -> bool:
        """The route's path condition (compared here, not by a stored function: compiled code
        runs it natively). A prefix is a plain string prefix, as Envoy's and Istio's
        ``prefix`` ("/api" also matches "/apix")."""
        kind = self.path_kind
        if kind == "prefix":
            return path.startswith(self.path)
        if kind == "exact":
            return path == self.path
        regex = self.path_regex
        assert regex is not None
        return regex.fullmatch(path) is not None

    def matches(self, path: str, method: str, header: HeaderGetter) -> bool:
        if self.methods and method not in self.methods:
            return False
        if not self.path_matches(path):
            return False
        if not self.headers:
            return True
        return all(h(header) for h in self.headers)


def _no_headers(name: str) -> str | None:
    return None


class Router:
    """First-match routing over an ordered route list, plus the weighted target pick."""

    __slots__ = ("_by_host", "_default", "_rng", "routes")

    def __init__(self, routes: Sequence[Route], rng: random.Random | None = None) -> None:
        self.routes = tuple(CompiledRoute.compile(r) for r in routes)
        self._rng = rng if rng is not None else random.Random()
        hosts = {h for cr in self.routes for h in cr.route.match.hosts}
        self._default = tuple(cr for cr in self.routes if not cr.route.match.hosts)
        self._by_host = {
            h: tuple(
                cr for cr in self.routes if not cr.route.match.hosts or h in cr.route.match.hosts
            )
            for h in hosts
        }

    @classmethod
    def for_listener(
        cls, routes: Sequence[Route], listener: Listener, rng: random.Random | None = None
    ) -> Router:
        """The routes a listener serves, kept in route-table order."""
        served = set(listener.routes)
        return cls([r for r in routes if r.name in served], rng)

    def match(
        self, host: str, path: str, method: str, header: HeaderGetter = _no_headers
    ) -> CompiledRoute | None:
        """The first route matching; ``host`` is the raw Host header, ``path`` normalised."""
        for cr in self.candidates(host):
            if cr.matches(path, method, header):
                return cr
        return None

    def candidates(self, host: str) -> tuple[CompiledRoute, ...]:
        """The routes whose host condition ``host`` (the raw Host header) meets, in order."""
        candidates = self._by_host.get(host)
        if candidates is None:
            candidates = self._by_host.get(normalize_host(host), self._default)
        return candidates

    def pick(self, cr: CompiledRoute) -> Target | None:
        """The weighted target of a matched route (``None`` for a redirect-only route)."""
        targets = cr.targets
        if len(targets) <= 1:
            return targets[0] if targets else None
        x = self._rng.random() * cr.cumulative[-1]
        for t, bound in zip(targets, cr.cumulative, strict=True):
            if x < bound:
                return t
        return targets[-1]

    def chance(self, percent: float) -> bool:
        """True with probability ``percent``/100 (faults, mirrors) from the same seeded rng."""
        return percent >= 100.0 or (percent > 0.0 and self._rng.random() * 100.0 < percent)
