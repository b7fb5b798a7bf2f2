"""What a tcp service or listener uses of mesh.yaml, written once.

Theory of operation: a ``protocol: tcp`` service forwards bytes, so the fields that describe
HTTP requests mean nothing for it. :mod:`meshgen.lower` drops those it *inherits* from
``defaults:`` (a shared ``timeout`` must not stop anyone from adding a database), and
:mod:`meshgen.checks.protocols` reports those written on the service itself (E801), since a
user who wrote them expects an effect. ``defaults: idle_timeout`` does not apply to a tcp
service either: its built-in is 1h, where an HTTP exchange's is 60s (Envoy's tcp_proxy and
HTTP idle timeouts differ the same way). Listener limits work alike: a tcp listener uses
:data:`TCP_LISTENER_LIMITS` and an http listener everything else (W801 for the rest).
"""

from __future__ import annotations

from typing import Final

TCP_HTTP_ONLY: Final = (
    "timeout",
    "rate_limit",
    "retries.per_try_timeout",
    "retries.on",
    "retries.backoff",
    "retries.budget",
    "retries.idempotent_only",
    "circuit_breaker.max_pending_requests",
    "circuit_breaker.max_requests",
)
"""Dotted service fields that apply to HTTP requests only (E801 when a tcp service sets one)."""

TCP_NOT_INHERITED: Final = (*TCP_HTTP_ONLY, "idle_timeout")
"""Fields a tcp service never takes from ``defaults:``."""

HTTP2_PROTOCOLS: Final = frozenset({"http2", "grpc"})
"""Service protocols whose endpoints speak HTTP/2 (the targets' ``proto h2`` / HTTP/2 options)."""

TCP_RETRY_ON: Final = ("connect-failure",)
"""A tcp service's retries are connect attempts: a connection is never replayed."""

TCP_LISTENER_LIMITS: Final = frozenset({"max_connections", "max_connection_duration"})
"""The ``limits`` a tcp listener uses; an http listener uses every other one."""

PROBE_KINDS: Final = {"http1": ("http", "tcp"), "tcp": ("tcp",)}
"""Health-check kinds the traffic port of a service can answer (other protocols: all); any
other kind needs ``health_check.port`` (E808)."""


def probe_needs_port(protocol: str, kind: str) -> bool:
    """Whether a ``kind`` check of a ``protocol`` service must probe another port."""
    return kind not in PROBE_KINDS.get(protocol, (kind,))


def limit_applies(listener_protocol: str, limit: str) -> bool:
    """Whether ``limits.<limit>`` has an effect on a listener of ``listener_protocol``."""
    return (limit in TCP_LISTENER_LIMITS) == (listener_protocol == "tcp") or (
        limit == "max_connections"
    )
