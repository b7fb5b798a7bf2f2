"""Where a tcp listener's connection goes: a weighted ``to`` target, or the ``sni`` service.

Theory of operation: one :class:`TcpRoute` per tcp listener of a table generation, built once.
``pick`` answers for one connection: with ``to``, a target drawn by weight from the
generation's random source (as a route's split is drawn per request); with ``sni``, the
service the ClientHello's server name routes to (:class:`~.sni.SniRouter`), or None (the
connection is refused and counted as ``sni_no_match``). ``services`` is every service a
connection may reach, failover backups included: access rules must admit the caller to all
of them (:meth:`~meshgen_runtime.policy.access.AccessPolicy.connection_denial`).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate

from ..tables import Cluster, Listener
from .access import listener_services
from .sni import SniRouter


@dataclass(frozen=True, slots=True)
class TcpPick:
    """The service (and subset) one connection is forwarded to."""

    service: str
    subset: str | None = None


class TcpRoute:
    """A tcp listener's forwarding decision (see the module docstring)."""

    __slots__ = ("_bounds", "_rng", "_sni", "_targets", "listener", "services")

    def __init__(
        self, listener: Listener, clusters: Mapping[str, Cluster], rng: random.Random
    ) -> None:
        self.listener = listener
        self.services = listener_services(listener, clusters)
        self._rng = rng
        self._sni = SniRouter(listener.sni) if listener.sni else None
        live = [t for t in listener.to if t.weight > 0]
        self._targets = tuple(TcpPick(t.service, t.subset) for t in live)
        self._bounds = tuple(accumulate(t.weight for t in live))

    @property
    def reads_hello(self) -> bool:
        """Whether the ClientHello must be read before a service can be chosen."""
        return self._sni is not None

    def pick(self, server_name: str | None = None) -> TcpPick | None:
        """The destination of one connection (``server_name``: from its ClientHello)."""
        if self._sni is not None:
            service = self._sni.route(server_name) if server_name is not None else None
            return None if service is None else TcpPick(service)
        targets = self._targets
        if len(targets) <= 1:
            return targets[0] if targets else None
        x = self._rng.random() * self._bounds[-1]
        return targets[min(bisect_right(self._bounds, x), len(targets) - 1)]
