"""Which service a TLS server name is passed through to (a tcp listener's ``sni``).

Theory of operation: an exact pattern wins; otherwise the longest ``*.`` pattern whose suffix
(``.internal.test`` for ``*.internal.test``) ends the name, at any depth (``a.b.internal.test``
matches, ``internal.test`` itself does not). Envoy's filter-chain ``server_names`` and
HAProxy's ``use_backend ... req.ssl_sni -m end`` lines in :func:`precedence` order decide the
same way. Names compare in lower case (DNS names are case-insensitive; the compiler accepts
only lower-case patterns). :class:`SniRouter` answers with one dict lookup per label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ..tables import SniRoute

WILDCARD: Final = "*."


def precedence(routes: Iterable[SniRoute]) -> tuple[SniRoute, ...]:
    """The routes in the order they are tried: exact names (sorted), then wildcards from the
    longest suffix to the shortest."""
    return tuple(sorted(routes, key=_rank))


def _rank(route: SniRoute) -> tuple[bool, int, str]:
    wild = route.pattern.startswith(WILDCARD)
    return (wild, -len(route.pattern) if wild else 0, route.pattern)


class SniRouter:
    """Server name -> service, by :func:`precedence`."""

    __slots__ = ("_exact", "_suffixes")

    def __init__(self, routes: Iterable[SniRoute]) -> None:
        self._exact: dict[str, str] = {}
        self._suffixes: dict[str, str] = {}  # ".internal.test" -> service
        for r in routes:
            if r.pattern.startswith(WILDCARD):
                self._suffixes[r.pattern[1:]] = r.service
            else:
                self._exact[r.pattern] = r.service

    def route(self, name: str) -> str | None:
        """The service for ``name``, or None (the connection is closed and counted)."""
        name = name.lower()
        found = self._exact.get(name)
        if found is not None or not self._suffixes:
            return found
        dot = name.find(".")
        while dot > 0:  # longest suffix first; a leading dot is no name
            found = self._suffixes.get(name[dot:])
            if found is not None:
                return found
            dot = name.find(".", dot + 1)
        return None
