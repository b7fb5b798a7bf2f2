"""What every lowering function works on: the document, merged ``defaults:``, the findings.

:class:`LowerContext` is plain state shared by the stage functions in services.py, routes.py,
listeners.py and monitoring.py; it also parses the values the schema cannot rule out
(addresses, durations) into diagnostics instead of exceptions. Nothing here knows about a
particular part of mesh.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshgen import builtin
from meshgen.diagnostics import Diagnostic
from meshgen.durations import DurationError, parse_duration
from meshgen.lower.merge import Merged, OriginMap, OriginOf, overlay
from meshgen.model import BUILT_IN, Gap, Origin, OriginKind, PathKey

if TYPE_CHECKING:
    from meshgen.source import Document


class LowerContext:
    """One lowering run: the document, the merged ``defaults:``, diagnostics and gaps.

    ``skip`` holds the units (:mod:`meshgen.units`) an earlier stage found broken: the stage
    functions leave them out. ``failed`` collects the paths of this run's own errors.
    """

    def __init__(self, doc: Document, skip: frozenset[PathKey] = frozenset()) -> None:
        self.doc = doc
        self.data: Merged = doc.data
        self.skip = skip
        self.failed: list[PathKey] = []
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
            self.origin("defaults"),
            ("defaults",),
        )

    def origin(self, kind: OriginKind) -> OriginOf:
        """How values written in layer ``kind`` record their origin (with the file that wrote
        them: mesh.yaml's name unless an overlay did)."""
        if not self.doc.overlays:
            name = self.doc.name
            return lambda where: Origin(kind, where, name)
        file_of = self.doc.file_of
        return lambda where: Origin(kind, where, file_of(where))

    def error(self, code: str, message: str, path: PathKey, hint: str | None = None) -> None:
        self.failed.append(path)
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
                'write IPv6 addresses in brackets, quoted: "[::1]:8080"',
            )
            return ("invalid", 0)
        return parsed

    def timed(self, merged: Merged, origins: OriginMap, dotted: str) -> float:
        """The merged duration at ``dotted`` (a service policy field), else its built-in."""
        fallback = builtin.seconds("service." + dotted)
        *parents, leaf = dotted.split(".")
        for part in parents:
            merged = merged.get(part) or {}
        if leaf not in merged:
            return fallback
        return self.duration(merged[leaf], origins.get(dotted, BUILT_IN).path, fallback)


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
