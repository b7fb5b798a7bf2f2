"""meshgen.diagnostics: the text, JSON and GitHub renderers and did-you-mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen.diagnostics import (
    QUOTE_WIDTH,
    Diagnostic,
    Related,
    Span,
    did_you_mean,
    render_github,
    render_json,
    render_text,
)
from meshgen.source import loads

SPEC_LINE = "      - service: reveiws"


def spec_source() -> str:
    return "\n" * 13 + SPEC_LINE + "\n"


def unknown_service() -> Diagnostic:
    return Diagnostic(
        "E201",
        "error",
        "route 'reviews-split' sends traffic to unknown service 'reveiws'",
        Span("mesh.yaml", 14, 18, 14, 25),
        hint="did you mean 'reviews'?",
    )


def test_text_matches_spec_layout() -> None:
    """Header, gutter with right-aligned line number, caret under the span, hint."""
    assert render_text([unknown_service()], {"mesh.yaml": spec_source()}) == (
        "mesh.yaml:14:18: error[E201]: route 'reviews-split' sends traffic to unknown service "
        "'reveiws'\n"
        "   14 |       - service: reveiws\n"
        "      |                  ^^^^^^^\n"
        "hint: did you mean 'reviews'?\n"
    )


def test_text_quotes_a_document() -> None:
    """A Document works as a source; related spans become note lines with their location."""
    doc, _ = loads("a: 1\nb: 2\n", "m.yaml")
    assert doc is not None
    diag = Diagnostic(
        "E008",
        "warning",
        "dup",
        Span("m.yaml", 2, 1, 2, 2),
        related=(Related(Span("m.yaml", 1, 1, 1, 2), "first set here"),),
    )
    assert render_text([diag], {"m.yaml": doc}) == (
        "m.yaml:2:1: warning[E008]: dup\n"
        "    2 | b: 2\n"
        "      | ^\n"
        "note: m.yaml:1:1: first set here\n"
    )


@pytest.mark.parametrize(
    ("span", "caret"),
    [
        (Span("f", 1, 3, 1, 3), "  ^"),  # zero width: one caret
        (Span("f", 1, 3, 4, 1), "  ^"),  # multi-line: one caret
        (Span("f", 1, 5, 1, 99), "    ^^"),  # clipped to the line
        (Span("f", 1, 7, 1, 9), "      ^"),  # past the end: one caret after the text
    ],
)
def test_caret_shapes(span: Span, caret: str) -> None:
    """Zero-width and multi-line spans get one caret; long spans are clipped to the line."""
    text = render_text([Diagnostic("E1", "error", "m", span)], {"f": "ab: cd\n"})
    assert text.splitlines()[2] == "      | " + caret


def test_tabs_are_kept_in_the_caret_padding() -> None:
    """A tab before the span is copied so the caret still lines up."""
    text = render_text([Diagnostic("E1", "error", "m", Span("f", 1, 4, 1, 5))], {"f": "a:\tb\n"})
    assert text.splitlines()[2] == "      |   \t^"


def _quoted(span: Span, text: str) -> tuple[str, str]:
    """The quoted line and the caret line of a diagnostic at ``span`` in ``text``, gutters cut."""
    quoted, carets = render_text([Diagnostic("E1", "error", "m", span)], {"f": text}).splitlines()[
        1:3
    ]
    return quoted.split(" | ", 1)[1], carets.split(" | ", 1)[1]


def test_a_long_line_is_quoted_as_a_window_around_the_span() -> None:
    """A mesh written on one line (minified JSON is YAML) quotes 120 characters of it around
    each span, not the whole file, with the cut ends marked."""
    line = "{" + ", ".join(f'"k{i}": {i}' for i in range(2000)) + "}"
    col = line.index('"k1000"') + 1
    shown, under = _quoted(Span("f", 1, col, 1, col + len('"k1000"')), line)
    assert shown == "..." + line[col - 41 : col - 41 + QUOTE_WIDTH] + "..."
    assert under == " " * 43 + "^" * len('"k1000"')


@given(
    size=st.integers(min_value=1, max_value=400),
    tabs=st.sets(st.integers(min_value=0, max_value=398)),
    col=st.integers(min_value=1, max_value=402),
    length=st.integers(min_value=0, max_value=300),
)
def test_the_carets_stay_under_the_span_in_any_line(
    size: int, tabs: set[int], col: int, length: int
) -> None:
    """Whatever the line's length and the span, the quoted part is at most QUOTE_WIDTH
    characters (plus the two cut marks), and the first caret sits under the span's first
    character (or just past the line's end when the span starts there). Every character of
    the line but its tabs is a different one, and the last is never a blank (a line's
    trailing blanks are not quoted)."""
    text = "".join("\t" if i in tabs and i < size - 1 else chr(0x100 + i) for i in range(size))
    shown, under = _quoted(Span("f", 1, col, 1, col + length), text)
    assert len(shown) <= QUOTE_WIDTH + 2 * len("...")
    at = under.index("^")
    first = min(col, len(text) + 1) - 1  # 0-based
    assert shown[at] == text[first] if first < len(text) else at == len(shown)
    assert under[:at] == "".join(c if c == "\t" else " " for c in shown[:at])


def test_wide_line_numbers_widen_the_gutter() -> None:
    """Line 123456 still fits the gutter."""
    source = "\n" * 123455 + "x: 1\n"
    lines = render_text(
        [Diagnostic("E1", "error", "m", Span("f", 123456, 1, 123456, 2))], {"f": source}
    ).splitlines()
    assert lines[1:] == [" 123456 | x: 1", "        | ^"]


def test_sorted_by_position_and_separated() -> None:
    """Diagnostics are sorted by file, line, column, and separated by a blank line."""
    later = Diagnostic("E2", "error", "later", Span("f", 2, 1, 2, 2))
    first = Diagnostic("E1", "error", "first", Span("f", 1, 1, 1, 2))
    text = render_text([later, first], {"f": "a\nb\n"})
    assert text.index("first") < text.index("later")
    assert "\n\nf:2:1:" in text


def test_missing_source_is_read_from_disk_or_skipped(tmp_path: Path) -> None:
    """Without a given source the file is read from disk; an unreadable one is just not quoted."""
    path = tmp_path / "m.yaml"
    path.write_text("k: v\n")
    diag = Diagnostic("E1", "error", "m", Span(str(path), 1, 4, 1, 5))
    assert "    1 | k: v" in render_text([diag])
    gone = Diagnostic("E1", "error", "m", Span(str(tmp_path / "nope"), 1, 1, 1, 1))
    assert render_text([gone]) == f"{tmp_path / 'nope'}:1:1: error[E1]: m\n"


def test_json() -> None:
    """JSON carries every field, related spans included."""
    diag = Diagnostic(
        "E008",
        "error",
        "dup",
        Span("m.yaml", 2, 1, 2, 2),
        "fix",
        (Related(Span("m.yaml", 1, 1, 1, 2), "first"),),
    )
    assert json.loads(render_json([diag])) == [
        {
            "file": "m.yaml",
            "line": 2,
            "column": 1,
            "end_line": 2,
            "end_column": 2,
            "severity": "error",
            "code": "E008",
            "message": "dup",
            "hint": "fix",
            "related": [
                {
                    "file": "m.yaml",
                    "line": 1,
                    "column": 1,
                    "end_line": 1,
                    "end_column": 2,
                    "message": "first",
                }
            ],
        }
    ]
    assert json.loads(render_json([])) == []


def test_github_annotation_and_escaping() -> None:
    """One workflow command per diagnostic, escaped as the actions toolkit does."""
    diag = Diagnostic(
        "E101",
        "warning",
        "100% bad\nvalue",
        Span("a,b:c.yaml", 3, 5, 3, 9),
        hint="try x",
        related=(Related(Span("a,b:c.yaml", 1, 1, 1, 2), "here"),),
    )
    assert render_github([diag]) == (
        "::warning file=a%2Cb%3Ac.yaml,line=3,col=5,endLine=3,endColumn=9,title=E101::"
        "100%25 bad%0Avalue%0Anote: a,b:c.yaml:1:1: here%0Ahint: try x"
    )


def test_did_you_mean() -> None:
    """Close names are suggested, case-only differences first, far ones not at all."""
    assert did_you_mean("reveiws", ["reviews", "ratings"]) == "did you mean 'reviews'?"
    assert did_you_mean("Reviews", ["reviews"]) == "did you mean 'reviews'?"
    assert did_you_mean("zzz", ["reviews"]) is None
    assert did_you_mean("x", []) is None
