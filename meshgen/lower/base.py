"""Shared pieces of lowering: merging with origins, addresses, durations.

services.py, routes.py and __init__.py build on these; the package docstring (lower/__init__)
states the theory of operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from meshgen.diagnostics import Diagnostic
from meshgen.durations import DurationError, parse_duration
from meshgen.model import (
    BUILT_IN,
    Gap,
    Origin,
    OriginKind,
    PathKey,
)

if TYPE_CHECKING:
    from meshgen.source import Document

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
DEFAULT_RETRY_ON: Final = ("connect-failure", "reset", "5xx")
ATOMIC: Final = frozenset({"load_balancer.hash_on"})  # one-of mappings replace as a whole
EXCLUSIVE: Final = {
    "health_check.http": "health_check.tcp",
    "health_check.tcp": "health_check.http",
}

Merged = dict[str, Any]
OriginMap = dict[str, Origin]


def overlay(
    merged: Merged,
    origins: OriginMap,
    value: Merged,
    kind: OriginKind,
    path: PathKey,
    prefix: str = "",
) -> None:
    """Merge ``value`` into ``merged`` in place: mappings key by key, lists and scalars replace."""
    for key, item in value.items():
        dotted = prefix + key
        where = (*path, key)
        other = EXCLUSIVE.get(dotted)
        if other is not None and merged.pop(other.rsplit(".", 1)[1], None) is not None:
            for stale in [k for k in origins if k == other or k.startswith(other + ".")]:
                del origins[stale]
        origins[dotted] = Origin(kind, where)
        if isinstance(item, dict) and dotted not in ATOMIC:
            current = merged.get(key)
            nested: Merged = dict(current) if isinstance(current, dict) else {}
            copy_nested(nested)
            merged[key] = nested
            overlay(nested, origins, item, kind, where, dotted + ".")
        else:
            merged[key] = item


def copy_nested(mapping: Merged) -> None:
    """Copy nested mappings so overlaying a service never mutates the shared ``defaults:``."""
    for key, item in mapping.items():
        if isinstance(item, dict):
            mapping[key] = dict(item)
            copy_nested(mapping[key])


def split_address(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` -> (lower-case host, port); None when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    elif ":" in host or "[" in host or "]" in host:
        return None
    return (host.lower(), int(port)) if host else None


def normalize_host(host: str) -> str:
    """Host header form used by the router: lower-case, no port, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def pairs(mapping: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (mapping or {}).items()))


def version_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


class LowererBase:
    """One lowering run: holds the document and collects diagnostics."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.data: Merged = doc.data
        self.diagnostics: list[Diagnostic] = []
        self.gaps: list[Gap] = []
        self.rate_limits: dict[str, Merged | None] = {}  # merged per service, for routes
        self.domain: str = str((self.data.get("mesh") or {}).get("domain") or "").rstrip(".")
        self.defaults: Merged = {}
        self.default_origins: OriginMap = {}
        overlay(
            self.defaults,
            self.default_origins,
            self.data.get("defaults") or {},
            "defaults",
            ("defaults",),
        )

    def error(self, code: str, message: str, path: PathKey, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, "error", message, self.doc.span(path), hint))

    def duration(self, value: Any, path: PathKey, fallback: float = 0.0) -> float:
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.error("E402", str(exc), path)
            return fallback

    def address(self, value: Any, path: PathKey, what: str, allow_zero: bool) -> tuple[str, int]:
        text = str(value)
        parsed = split_address(text)
        if parsed is None or (parsed[1] == 0 and not allow_zero):
            rule = "host:port with a port 1..65535" if not allow_zero else "host:port"
            self.error(
                "E401",
                f"'{text}' is not a valid {what} address; expected {rule}",
                path,
                "write IPv6 addresses as [::1]:8080",
            )
            return ("invalid", 0)
        return parsed

    def timed(self, merged: Merged, origins: OriginMap, dotted: str, fallback: float) -> float:
        """The duration at ``dotted`` in ``merged`` (built-in ``fallback`` when absent)."""
        *parents, leaf = dotted.split(".")
        for part in parents:
            merged = merged.get(part) or {}
        if leaf not in merged:
            return fallback
        return self.duration(merged[leaf], origins.get(dotted, BUILT_IN).path, fallback)
