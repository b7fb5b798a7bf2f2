"""Read mesh.yaml into plain data plus a node tree that knows every line and column.

Theory of operation: :func:`loads` checks size and encoding, composes the text with libyaml
(:mod:`meshgen.source_compose`, safe against deep nesting) and walks the node tree once into
plain dicts/lists with YAML 1.2 core-schema scalars (:mod:`meshgen.source_build`), then
gathers facts about the files the spec names (:mod:`meshgen.source_files`), so no later stage
touches the file system. The node tree is kept in the :class:`Document`; spans are resolved
lazily by path, so the happy path pays nothing for them. The tree is millions of acyclic
objects: callers that load large specs should pause the cyclic garbage collector around the
whole build (``meshgen.pipeline.collector_paused`` does).

Safety: only safe YAML (no Python tags; unknown tags are errors), a size limit (``MAX_BYTES``),
an alias expansion limit (``MAX_ALIAS_NODES``) and a nesting limit (``MAX_DEPTH``). Merge keys
(``<<``) are rejected: YAML 1.2 dropped them, and ``defaults:`` covers the use case. Numbers
must be finite: ``.inf``, ``.nan``, floats that overflow (``1e999``) and integers too large to
become a float are errors, so no later stage has to guard its arithmetic against them.

libyaml 0.2.6 (PyYAML 6.0.4's wheels) has its own nesting limit of 1000 levels, reached while
scanning ahead, before the pre-scan sees level ``MAX_DEPTH``; its error is turned into the
same E011 at the same place by re-running the pre-scan with PyYAML's pure-Python parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .diagnostics import Diagnostic, Related, Span
from .source_build import MAX_ALIAS_NODES, build
from .source_compose import MAX_DEPTH, PLAIN, DepthError, check_depth, compose, mark_span, point
from .source_files import FileFacts, gather

__all__ = ["MAX_ALIAS_NODES", "MAX_BYTES", "MAX_DEPTH", "Document", "PathKey", "load", "loads"]

PathKey = tuple[str | int, ...]

MAX_BYTES = 32 * 1024 * 1024
"""Largest accepted input (UTF-8 bytes)."""

_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@dataclass(frozen=True)
class Document:
    """A loaded mesh.yaml: plain ``data``, the node tree its spans come from, and ``files``:
    what the file system says about the files it names (:mod:`meshgen.source_files`)."""

    path: Path
    name: str
    text: str
    data: Any
    root: Node | None = field(default=None, repr=False, compare=False)
    files: Mapping[str, FileFacts] = field(default_factory=dict, repr=False, compare=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def span(self, path: PathKey) -> Span:
        """Span of the value at ``path``; the nearest existing ancestor's if it is absent."""
        node = self._walk(path)[1]
        return mark_span(self.name, node) if node is not None else point(self.name, 1, 1)

    def key_span(self, path: PathKey) -> Span:
        """Span of the key token of the last element of ``path`` (mapping entries only)."""
        if path and isinstance(path[-1], str):
            parent, node = self._walk(path[:-1])
            if parent == len(path) - 1 and isinstance(node, MappingNode):
                entry = self._index(node).get(path[-1])
                if entry is not None:
                    return mark_span(self.name, entry[0])
        return self.span(path)

    def line_text(self, line: int) -> str:
        """The text of 1-based ``line`` without its line break ("" past the end)."""
        lines: list[str] | None = self._cache.get("lines")
        if lines is None:
            lines = _LINE_BREAK.split(self.text)
            self._cache["lines"] = lines
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def _walk(self, path: PathKey) -> tuple[int, Node | None]:
        """(number of path elements found, deepest node found)."""
        node = self.root
        for depth, step in enumerate(path):
            child: Node | None = None
            if isinstance(node, MappingNode) and isinstance(step, str):
                entry = self._index(node).get(step)
                child = entry[1] if entry is not None else None
            elif isinstance(node, SequenceNode) and isinstance(step, int):
                child = node.value[step] if 0 <= step < len(node.value) else None
            if child is None:
                return depth, node
            node = child
        return len(path), node

    def _index(self, node: MappingNode) -> dict[str, tuple[Node, Node]]:
        indexes: dict[int, dict[str, tuple[Node, Node]]] = self._cache.setdefault("index", {})
        index = indexes.get(id(node))
        if index is None:
            index = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    index.setdefault(key.value, (key, value))
            indexes[id(node)] = index
        return index


def _error(code: str, message: str, span: Span, hint: str | None = None) -> list[Diagnostic]:
    """The one error that stops a load."""
    return [Diagnostic(code, "error", message, span, hint)]


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` of ``text``."""
    line_start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _yaml_error(name: str, text: str, exc: Exception) -> Diagnostic:
    if isinstance(exc, yaml.reader.ReaderError):
        index = len(text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
        line, col = _line_col(text, index)
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
        related: tuple[Related, ...] = ()
        if exc.context and exc.context_mark is not None:
            cm = exc.context_mark
            related = (Related(point(name, cm.line + 1, cm.column + 1), exc.context),)
        return Diagnostic("E004", "error", f"invalid YAML: {exc.problem}", span, None, related)
    return Diagnostic("E004", "error", f"invalid YAML: {exc}", point(name, 1, 1))


def _too_deep(name: str, mark: Any) -> Diagnostic:
    message = f"nesting is deeper than {MAX_DEPTH} levels"
    return Diagnostic("E011", "error", message, point(name, mark.line + 1, mark.column + 1))


def _nesting_error(name: str, text: str, exc: Exception) -> Diagnostic | None:
    """E011 where the input passes MAX_DEPTH, if ``exc`` is libyaml's own nesting limit.

    libyaml >= 0.2.6 fails at 1000 levels while scanning ahead of the events the pre-scan
    counts; the pure-Python parser has no such limit, is lazy, and stops at MAX_DEPTH + 1.
    """
    if not (isinstance(exc, yaml.MarkedYAMLError) and "nesting" in str(exc.problem)):
        return None
    try:
        check_depth(text, yaml.SafeLoader)
    except DepthError as deep:
        return _too_deep(name, deep.mark)
    except yaml.YAMLError:
        return None
    return None


def _too_large(name: str) -> list[Diagnostic]:
    message = f"the file is larger than {MAX_BYTES >> 20} MiB"
    hint = "the limit guards against runaway input (about 20,000 services fit); split the mesh"
    return _error("E002", message, point(name, 1, 1), hint)


def loads(
    text: str, name: str, path: Path | None = None
) -> tuple[Document | None, list[Diagnostic]]:
    """Parse ``text`` (diagnostics name it ``name``); the Document is None if anything failed."""
    try:
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        line, col = _line_col(text, exc.start)
        message = "the text holds an unpaired surrogate, which is not valid Unicode"
        return None, _error("E003", message, point(name, line, col))
    if size > MAX_BYTES:
        return None, _too_large(name)
    if text.startswith("\ufeff"):
        text = text[1:]
    return _load_text(text, name, path if path is not None else Path(name))


def _load_text(text: str, name: str, path: Path) -> tuple[Document | None, list[Diagnostic]]:
    try:
        root = compose(text)
    except DepthError as exc:
        return None, [_too_deep(name, exc.mark)]
    except (yaml.YAMLError, ValueError, UnicodeError) as exc:
        return None, [_nesting_error(name, text, exc) or _yaml_error(name, text, exc)]
    if root is None or (
        root.__class__ is ScalarNode
        and root.tag is PLAIN
        and root.value in ("", "~", "null", "Null", "NULL")
    ):
        hint = "start with `version: 1`, or run `meshgen init`"
        return None, _error("E005", "the file is empty", point(name, 1, 1), hint)
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else f"the value {root.value!r}"
        hint = "a mesh.yaml is a mapping with `version`, `mesh` and `services`"
        message = f"the document is {kind}, not a mapping"
        return None, _error("E007", message, mark_span(name, root), hint)
    data, diagnostics = build(root, name, "&" in text)
    if diagnostics:
        return None, diagnostics
    return Document(path, name, text, data, root, gather(data, path.parent)), []


def load(path: Path) -> tuple[Document | None, list[Diagnostic]]:
    """Read and parse ``path``; diagnostics name the file as given."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, _error("E001", f"cannot read {name!r}: {reason.lower()}", point(name, 1, 1))
    if len(raw) > MAX_BYTES:
        return None, _too_large(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start].decode("utf-8", "replace")
        line, col = _line_col(prefix, len(prefix))
        message = f"byte 0x{raw[exc.start]:02x} is not valid UTF-8"
        return None, _error("E003", message, point(name, line, col), "save the file as UTF-8")
    return loads(text, name, path)
