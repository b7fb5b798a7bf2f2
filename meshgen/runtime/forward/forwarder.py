"""What a proxied request's driver needs from the proxy: a base class ``proxy.Proxy`` subclasses.

Why a base class and not a protocol: compiled (mypyc) code reads a protocol's attributes and
calls its methods by name, a class's natively (as ``Balancer`` for the balancing policies). A
module of its own, so that the drivers (``fastpath``, ``h2_driver``) do not import ``proxy``,
which imports them (``tests/unit/test_runtime_layers.py`` forbids the cycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .attempt import Attempt
    from .exchange import Exchange
    from .generation import Generation


class Forwarder:
    """The live generation, the exchange that carries out tries, mirrors and the accounting."""

    generation: Generation
    exchange: Exchange

    def mirror(self, att: Attempt) -> None:
        """The machine's MIRROR: a copy of the request to its mirror service."""
        raise NotImplementedError

    def settle(self, att: Attempt) -> None:
        """A request ended (answered by its driver): in-flight count, metrics, access log."""
        raise NotImplementedError
