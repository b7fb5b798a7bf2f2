"""Diagnostics: what every stage reports instead of raising.

A :class:`Diagnostic` has a stable code (documented in docs/diagnostics.md), a severity, a
primary :class:`Span`, a message that names the offending value then the rule, an optional
hint, and related spans (a cycle names every member). Renderers live below the types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DiagnosticSeverity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """A region of a source file; lines and columns are 1-based, ``end_col`` exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int


@dataclass(frozen=True, slots=True)
class Related:
    span: Span
    message: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: DiagnosticSeverity
    message: str
    span: Span
    hint: str | None = None
    related: tuple[Related, ...] = ()

    @property
    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.file, self.span.line, self.span.col, self.code, self.message)


def has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)
