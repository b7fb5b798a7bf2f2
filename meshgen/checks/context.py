"""What every check reports through: the mesh, the document, and the diagnostics so far."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from meshgen.diagnostics import Diagnostic, DiagnosticSeverity, Related, Span, did_you_mean

__all__ = ["Context", "did_you_mean"]

if TYPE_CHECKING:
    from meshgen.model import Mesh, PathKey
    from meshgen.source import Document


class Context:
    def __init__(self, mesh: Mesh, doc: Document) -> None:
        self.mesh = mesh
        self.doc = doc
        self.diagnostics: list[Diagnostic] = []

    def report(
        self,
        severity: DiagnosticSeverity,
        code: str,
        message: str,
        path: PathKey,
        hint: str | None = None,
        related: Iterable[tuple[PathKey, str]] = (),
        key: bool = False,
        at: Span | None = None,
    ) -> None:
        """Report at the value node of ``path`` (its key token when ``key``), or at ``at``."""
        span = at or (self.doc.key_span(path) if key else self.doc.span(path))
        self.diagnostics.append(
            Diagnostic(
                code,
                severity,
                message,
                span,
                hint,
                tuple(Related(self.doc.span(p), m) for p, m in related),
            )
        )

    def error(
        self,
        code: str,
        message: str,
        path: PathKey,
        hint: str | None = None,
        related: Iterable[tuple[PathKey, str]] = (),
        key: bool = False,
        at: Span | None = None,
    ) -> None:
        self.report("error", code, message, path, hint, related, key, at)

    def warning(
        self,
        code: str,
        message: str,
        path: PathKey,
        hint: str | None = None,
        related: Iterable[tuple[PathKey, str]] = (),
        key: bool = False,
    ) -> None:
        self.report("warning", code, message, path, hint, related, key)
