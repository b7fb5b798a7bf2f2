"""Policy merging with origins: built-in < ``defaults:`` < service < route.

Mappings merge key by key; lists and scalars replace. Each merged field remembers the
:class:`~meshgen.model.Origin` of the value that won, keyed by its dotted name
(``"retries.attempts"``). Built-in values are never stored: a missing key means "built-in"
(:mod:`meshgen.builtin` supplies it when the value is read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from meshgen.model import Origin, PathKey

POLICY_FIELDS: Final = (
    "load_balancer",
    "health_check",
    "outlier_detection",
    "circuit_breaker",
    "connect_timeout",
    "timeout",
    "idle_timeout",
    "retries",
    "rate_limit",
    "tls",
)
CALL_FIELDS: Final[tuple[str, ...]] = ("timeout", "idle_timeout", "retries")
ATOMIC: Final = frozenset({"load_balancer.hash_on"})  # one-of mappings replace as a whole
_PROBES: Final = ("health_check.http", "health_check.tcp", "health_check.grpc")
EXCLUSIVE: Final = {kind: tuple(k for k in _PROBES if k != kind) for kind in _PROBES}
"""A field -> the fields it replaces when a later layer writes it (one probe kind at a time)."""

Merged = dict[str, Any]
OriginMap = dict[str, Origin]
OriginOf = Callable[[PathKey], Origin]
"""The origin of a value written at a path, in one layer (see LowerContext.origin)."""


def overlay(
    merged: Merged,
    origins: OriginMap,
    value: Merged,
    origin: OriginOf,
    path: PathKey,
    prefix: str = "",
) -> None:
    """Merge ``value`` into ``merged`` in place: mappings key by key, lists and scalars replace."""
    for key, item in value.items():
        dotted = prefix + key
        where = (*path, key)
        for other in EXCLUSIVE.get(dotted, ()):
            if merged.pop(other.rsplit(".", 1)[1], None) is not None:
                _forget(origins, other)
        origins[dotted] = origin(where)
        if isinstance(item, dict) and dotted not in ATOMIC:
            current = merged.get(key)
            nested: Merged = dict(current) if isinstance(current, dict) else {}
            copy_nested(nested)
            merged[key] = nested
            overlay(nested, origins, item, origin, where, dotted + ".")
        else:
            merged[key] = item


def drop(merged: Merged, origins: OriginMap, dotted: str) -> None:
    """Remove the field ``dotted`` (and what is under it) from a merged mapping."""
    *parents, leaf = dotted.split(".")
    inner: Any = merged
    for part in parents:
        inner = inner.get(part)
        if not isinstance(inner, dict):
            return
    inner.pop(leaf, None)
    _forget(origins, dotted)


def _forget(origins: OriginMap, dotted: str) -> None:
    for stale in [k for k in origins if k == dotted or k.startswith(dotted + ".")]:
        del origins[stale]


def copy_nested(mapping: Merged) -> None:
    """Copy nested mappings so overlaying a service never mutates the shared ``defaults:``."""
    for key, item in mapping.items():
        if isinstance(item, dict):
            mapping[key] = dict(item)
            copy_nested(mapping[key])
