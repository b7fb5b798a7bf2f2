"""libyaml's exceptions -> meshgen's own E004/E006/E011 diagnostics, with a hint where one helps.

libyaml says what its parser expected ("found character that cannot start any token", "did not
find expected key"); a mesh.yaml author needs to know what they wrote wrong. The common
mistakes are recognised from the text around the error and explained:

* a tab in indentation (YAML allows only spaces there);
* an unquoted IPv6 address (``address: [::1]:80``): ``[`` starts a YAML list;
* a list item indented differently from the items above it: the item and its list are named.

Anything else keeps libyaml's words, prefixed with "invalid YAML".
"""

from __future__ import annotations

import re
from typing import Any

from meshgen.pyyaml import yaml

from .diagnostics import Diagnostic, Related, Span, split_lines
from .source_compose import MAX_DEPTH, DepthError, check_depth, point

_IPV6 = re.compile(r"\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.%\w]*\](?::[0-9]*)?")
_ITEM = re.compile(r"^( *)- ?(.*)$")
_KEY = re.compile(r"^( *)(?:- +)?([^\s#:][^:#]*?) *:(?: |$)")


def line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` of ``text``."""
    line_start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def yaml_error(name: str, text: str, exc: Exception) -> Diagnostic:
    """The diagnostic for a composing failure (``exc`` from libyaml)."""
    if isinstance(exc, yaml.reader.ReaderError):
        index = len(text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
        line, col = line_col(text, index)
        return Diagnostic(
            "E004",
            "error",
            f"character {chr(exc.character)!r} is not allowed in YAML: {exc.reason}",
            point(name, line, col),
            "remove the character or quote and escape it (\\x..)",
        )
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        span = point(name, mark.line + 1, mark.column + 1)
        if exc.problem == "but found another document":
            return Diagnostic(
                "E006",
                "error",
                "the file holds more than one YAML document",
                span,
                "a mesh.yaml holds one document: remove the '---' separator",
            )
        lines = split_lines(text)
        known = _explained(name, lines, mark.line, mark.column, str(exc.problem))
        if known is not None:
            return known
        related: tuple[Related, ...] = ()
        if exc.context and exc.context_mark is not None:
            cm = exc.context_mark
            related = (Related(point(name, cm.line + 1, cm.column + 1), exc.context),)
        return Diagnostic("E004", "error", f"invalid YAML: {exc.problem}", span, None, related)
    return Diagnostic("E004", "error", f"invalid YAML: {exc}", point(name, 1, 1))


def _explained(name: str, lines: list[str], row: int, col: int, problem: str) -> Diagnostic | None:
    """A diagnostic in meshgen's words for a mistake recognised at 0-based ``row``/``col``."""
    text = lines[row] if 0 <= row < len(lines) else ""
    indent = text[: len(text) - len(text.lstrip(" \t"))]
    if "\t" in indent and col <= len(indent):
        tab = indent.index("\t")
        return Diagnostic(
            "E004",
            "error",
            "tabs are not allowed for indentation",
            Span(name, row + 1, tab + 1, row + 1, tab + 2),
            "indent with spaces (YAML forbids tabs there); set your editor to insert spaces",
        )
    for found in _IPV6.finditer(text):
        if found.start() <= col <= found.end() and not _quoted(text, found.start()):
            value = found.group()
            return Diagnostic(
                "E004",
                "error",
                f"{value} must be quoted: an unquoted '[' starts a YAML list",
                Span(name, row + 1, found.start() + 1, row + 1, found.end() + 1),
                f'quote an IPv6 address: "{value}"',
            )
    if problem in ("did not find expected key", "did not find expected '-' indicator"):
        return _misaligned(name, lines, row)
    return None


def _quoted(text: str, index: int) -> bool:
    """Whether ``index`` of a line is inside a quoted scalar (quotes counted before it)."""
    before = text[:index]
    return before.count('"') % 2 == 1 or before.count("'") % 2 == 1


def _misaligned(name: str, lines: list[str], row: int) -> Diagnostic | None:
    """A list item at ``row`` indented differently from the item before it, named."""
    item = _ITEM.match(lines[row]) if row < len(lines) else None
    if item is None:
        return None
    column = len(item.group(1))
    for above in range(row - 1, -1, -1):
        other = _ITEM.match(lines[above])
        if other is None or len(other.group(1)) > column + 8:
            continue
        other_column = len(other.group(1))
        if other_column == column:
            return None
        owner = _owner(lines, above, other_column)
        of_list = f" of '{owner}'" if owner else ""
        shown, before = _shown(lines[row].strip()), _shown(lines[above].strip())
        return Diagnostic(
            "E004",
            "error",
            f"list item '{shown}'{of_list} is indented {column} spaces, but the item before it "
            f"{other_column}",
            Span(name, row + 1, column + 1, row + 1, len(lines[row].rstrip()) + 1),
            f"items of one list start in the same column: indent it like '{before}' "
            f"(line {above + 1})",
            (Related(point(name, above + 1, other_column + 1), "the item before it"),),
        )
    return None


def _owner(lines: list[str], row: int, column: int) -> str | None:
    """The key a list whose items start at ``column`` belongs to (the line above its first item)."""
    for above in range(row - 1, -1, -1):
        line = lines[above]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key = _KEY.match(line)
        indent = len(line) - len(line.lstrip(" "))
        if indent < column or (indent == column and not line.lstrip().startswith("-")):
            return key.group(2) if key is not None else None
    return None


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def too_deep(name: str, mark: Any) -> Diagnostic:
    message = f"nesting is deeper than {MAX_DEPTH} levels"
    return Diagnostic("E011", "error", message, point(name, mark.line + 1, mark.column + 1))


def nesting_error(name: str, text: str, exc: Exception) -> Diagnostic | None:
    """E011 where the input passes MAX_DEPTH, if ``exc`` is libyaml's own nesting limit.

    libyaml >= 0.2.6 fails at 1000 levels while scanning ahead of the events the pre-scan
    counts; the pure-Python parser has no such limit, is lazy, and stops at MAX_DEPTH + 1.
    """
    if not (isinstance(exc, yaml.MarkedYAMLError) and "nesting" in str(exc.problem)):
        return None
    try:
        check_depth(text, yaml.SafeLoader)
    except DepthError as deep:
        return too_deep(name, deep.mark)
    except yaml.YAMLError:
        return None
    return None
