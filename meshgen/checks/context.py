"""What every check reports through: the mesh, the document, and the diagnostics so far."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from meshgen.diagnostics import Diagnostic, DiagnosticSeverity, Related

if TYPE_CHECKING:
    from meshgen.model import Mesh, PathKey
    from meshgen.source import Document


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the closest candidate (ignoring case), or None if none is close."""
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), candidate)
    close = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=0.6)
    return f"did you mean '{by_folded[close[0]]}'?" if close else None


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
    ) -> None:
        """Report at the value node of ``path`` (its key token when ``key``)."""
        span = self.doc.key_span(path) if key else self.doc.span(path)
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
    ) -> None:
        self.report("error", code, message, path, hint, related, key)

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
