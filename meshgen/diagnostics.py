"""Diagnostics: what every stage reports instead of raising.

A :class:`Diagnostic` has a stable code (documented in docs/diagnostics.md), a severity, a
primary :class:`Span`, a message that names the offending value then the rule, an optional
hint, and related spans (a cycle names every member). Renderers live below the types; the
codes and their titles are listed once, in :mod:`meshgen.codes`.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal, Protocol

from meshgen.record import Record

DiagnosticSeverity = Literal["error", "warning"]


class Span(Record):
    """A region of a source file; lines and columns are 1-based, ``end_col`` exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int


class Related(Record):
    """A second place a diagnostic points at (e.g. where a duplicate was first set)."""

    span: Span
    message: str


class Diagnostic(Record):
    """One problem found in the input, with where it is and how to fix it."""

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


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the closest candidate, or None when nothing is close."""
    options = sorted(set(candidates))
    folded = [c for c in options if c.lower() == word.lower() and c != word]
    if folded:
        return f"did you mean '{folded[0]}'?"
    import difflib  # imported here: only a spec with a mistake needs it

    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


# --- renderers ----------------------------------------------------------------------------


class SourceLines(Protocol):
    """What the text renderer needs of a source (meshgen.source.Document has it)."""

    def line_text(self, line: int) -> str: ...


LINE_BREAKS = "\r\n|[\r\n\x85\u2028\u2029]"
"""YAML's line breaks, as libyaml counts lines and spans number them: a pattern that the first
split compiles, as only a diagnostic's source line needs it (~0.4 ms of a validate)."""


def split_lines(text: str) -> list[str]:
    """``text``'s lines without their line breaks."""
    return re.split(LINE_BREAKS, text)


def _sorted(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: d.sort_key)


def _where(span: Span) -> str:
    return f"{span.file}:{span.line}:{span.col}"


class _Lines:
    """Source lines per file: from ``sources``, else read from disk once (best effort)."""

    def __init__(self, sources: Mapping[str, SourceLines | str] | None) -> None:
        self.sources = sources or {}
        self.split: dict[str, list[str] | SourceLines | None] = {}

    def get(self, file: str, line: int) -> str | None:
        if file not in self.split:
            source = self.sources.get(file)
            if source is None:
                try:
                    with open(file, encoding="utf-8", errors="replace") as handle:
                        source = handle.read()
                except (OSError, ValueError):
                    source = None
            self.split[file] = split_lines(source) if isinstance(source, str) else source
        lines = self.split[file]
        if lines is None:
            return None
        if isinstance(lines, list):
            return lines[line - 1] if 0 < line <= len(lines) else None
        return lines.line_text(line) if line > 0 else None


QUOTE_WIDTH: Final = 120
"""Characters of a source line quoted around a span: a longer line (a mesh written as one flow
mapping, or as minified JSON) is quoted as a window of this many, each cut end marked ``...``,
so that no diagnostic prints a whole file."""


def _snippet(span: Span, text: str) -> list[str]:
    """The quoted source line (a window of it when long) and the caret line under ``span``."""
    width = max(5, len(str(span.line)) + 1)
    start = min(max(span.col, 1), len(text) + 1)
    if span.end_line == span.line and span.end_col > span.col:
        carets = max(1, min(span.end_col, len(text) + 1) - start)
    else:
        carets = 1
    if len(text) > QUOTE_WIDTH:
        text, start, carets = _window(text, start, carets)
    pad = "".join(c if c == "\t" else " " for c in text[: start - 1])
    return [f"{span.line:>{width}} | {text}".rstrip(), f"{'':>{width}} | {pad}{'^' * carets}"]


def _window(text: str, start: int, carets: int) -> tuple[str, int, int]:
    """``text`` cut to :data:`QUOTE_WIDTH` characters from a third of that before column
    ``start`` (1-based), and the carets' column and count within what is quoted."""
    first = max(0, min(start - 1 - QUOTE_WIDTH // 3, len(text) - QUOTE_WIDTH))
    head = "..." if first > 0 else ""
    tail = "..." if first + QUOTE_WIDTH < len(text) else ""
    within = start - 1 - first  # the span's first character, 0-based in the window
    carets = max(1, min(carets, QUOTE_WIDTH - within))
    return head + text[first : first + QUOTE_WIDTH] + tail, len(head) + within + 1, carets


def render_text(
    diagnostics: Iterable[Diagnostic],
    sources: Mapping[str, SourceLines | str] | None = None,
) -> str:
    """docs/diagnostics.md's format: header, source line, caret, notes, hint; blank line between.

    ``sources`` maps a file name (as in spans) to its Document or text; a file missing from it
    is read from disk, and a line that cannot be found is simply not quoted.
    """
    lines = _Lines(sources)
    blocks: list[str] = []
    for diag in _sorted(diagnostics):
        out = [f"{_where(diag.span)}: {diag.severity}[{diag.code}]: {diag.message}"]
        text = lines.get(diag.span.file, diag.span.line)
        if text is not None:
            out.extend(_snippet(diag.span, text))
        out.extend(f"note: {_where(r.span)}: {r.message}" for r in diag.related)
        if diag.hint:
            out.append(f"hint: {diag.hint}")
        blocks.append("\n".join(out) + "\n")
    return "\n".join(blocks)


def _span_json(span: Span) -> dict[str, str | int]:
    return {
        "file": span.file,
        "line": span.line,
        "column": span.col,
        "end_line": span.end_line,
        "end_column": span.end_col,
    }


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    """A JSON list of objects (no trailing newline), sorted by position."""
    import json  # here: a validate that prints text need not import it (~3 ms)

    return json.dumps(
        [
            {
                **_span_json(d.span),
                "severity": d.severity,
                "code": d.code,
                "message": d.message,
                "hint": d.hint,
                "related": [{**_span_json(r.span), "message": r.message} for r in d.related],
            }
            for d in _sorted(diagnostics)
        ],
        indent=2,
        ensure_ascii=False,
    )


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """GitHub Actions workflow commands, one line per diagnostic (no trailing newline).

    The hint and notes follow the message on their own lines (``%0A``), escaped as the
    actions toolkit does: ``%`` ``\\r`` ``\\n`` in data, plus ``:`` and ``,`` in properties.
    """
    out = []
    for d in _sorted(diagnostics):
        s = d.span
        props = ",".join(
            f"{key}={_escape_property(str(value))}"
            for key, value in (
                ("file", s.file),
                ("line", s.line),
                ("col", s.col),
                ("endLine", s.end_line),
                ("endColumn", s.end_col),
                ("title", d.code),
            )
        )
        body = [d.message, *(f"note: {_where(r.span)}: {r.message}" for r in d.related)]
        if d.hint:
            body.append(f"hint: {d.hint}")
        out.append(f"::{d.severity} {props}::{_escape_data(chr(10).join(body))}")
    return "\n".join(out)
