"""Read mesh.yaml into plain data plus a node tree that knows every line and column.

Theory of operation: libyaml (``yaml._yaml.CParser``) composes the text into a node tree; the
composer's resolver is replaced by a trivial one, and :class:`_Builder` walks the tree once to
build plain dicts/lists with YAML 1.2 core-schema scalars (``yes``/``no``/``on``/``off`` stay
strings; mapping keys are always the key's raw text). The node tree is kept in the
:class:`Document`; spans are resolved lazily by path, so the happy path pays nothing for them.
The tree is millions of acyclic objects: callers that load large specs should pause the cyclic
garbage collector around the whole build (``meshgen.pipeline.collector_paused`` does).

Safety: only safe YAML (no Python tags; unknown tags are errors), a size limit, an alias
expansion limit (aliases share the built object, and the nodes they add are counted so a
billion-laughs file fails fast), and a nesting limit. libyaml's composer recurses in C, so a
deeply nested input could overflow the C stack: when the text *could* nest deeply, composing runs
in a thread whose stack is sized for the worst case, or a depth pre-scan over events runs first.
Merge keys (``<<``) are rejected: YAML 1.2 dropped them, and ``defaults:`` covers the use case.
Numbers must be finite: ``.inf``, ``.nan``, floats that overflow (``1e999``) and integers too
large to become a float are errors, so no later stage has to guard its arithmetic against them.

libyaml 0.2.6 (PyYAML 6.0.4's wheels) has its own nesting limit of 1000 levels, reached while
scanning ahead, before the pre-scan sees level ``MAX_DEPTH``; its error is turned into the
same E011 at the same place by re-running the pre-scan with PyYAML's pure-Python parser.
"""

from __future__ import annotations

import math
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml
from yaml._yaml import CParser
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .diagnostics import Diagnostic, Related, Span, register

for _code, _title in (
    ("E001", "the file cannot be read"),
    ("E002", "the file is too large"),
    ("E003", "the file is not valid UTF-8 text"),
    ("E004", "invalid YAML syntax"),
    ("E005", "the file is empty"),
    ("E006", "more than one YAML document"),
    ("E007", "the document is not a mapping"),
    ("E008", "duplicate mapping key"),
    ("E009", "aliases expand to too many nodes"),
    ("E010", "recursive alias"),
    ("E011", "nesting too deep"),
    ("E012", "merge keys are not supported"),
    ("E013", "mapping key is not a plain value"),
    ("E014", "unsupported YAML tag"),
    ("E015", "number is infinite, NaN or too large"),
):
    register(_code, _title)

PathKey = tuple[str | int, ...]

MAX_BYTES = 32 * 1024 * 1024
"""Largest accepted input (UTF-8 bytes)."""
MAX_ALIAS_NODES = 1_000_000
"""Most nodes that aliases may add to the document by repetition."""
MAX_DEPTH = 100
"""Deepest accepted nesting of mappings and sequences."""

_MAIN_STACK_LEVELS = 4096  # libyaml needs ~250 bytes of C stack per level; 8 MiB main stack
_THREAD_STACK_LEVELS = 1_000_000
_STACK_BYTES_PER_LEVEL = 512

_PLAIN = "?"  # tag our resolver gives plain (unquoted, untagged) scalars
_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _TAG + "str", _TAG + "map", _TAG + "seq"
_MISSING: Any = object()
_NOT_FINITE: Any = object()
_LARGEST_FLOAT = int(sys.float_info.max)
_WORDS: dict[str, Any] = {
    "": None, "~": None, "null": None, "Null": None, "NULL": None,
    "true": True, "True": True, "TRUE": True,
    "false": False, "False": False, "FALSE": False,
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf",
                     "-.INF", ".nan", ".NaN", ".NAN"), _NOT_FINITE),
}  # fmt: skip
_TAGGED: dict[str, Any] = {
    _TAG + "int": int, _TAG + "float": (int, float), _TAG + "bool": bool, _TAG + "null": type(None)
}
_NUMBER_START = frozenset("0123456789+-.")
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+").fullmatch
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?").fullmatch
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


class _NotFinite(Exception):
    """A scalar that YAML would read as infinity or NaN."""


class _Loader(CParser):
    """libyaml composer with a resolver that only tells plain scalars from the rest."""

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _MAP if kind is MappingNode else _SEQ

    def descend_resolver(self, parent: Node | None, index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


def _core_scalar(value: str) -> Any:
    """A plain scalar's value under the YAML 1.2 core schema; raises _NotFinite for inf/NaN."""
    word = _WORDS.get(value, _MISSING)
    if word is not _MISSING:
        if word is _NOT_FINITE:
            raise _NotFinite
        return word
    if value[0] not in _NUMBER_START:
        return value
    try:
        if _INT(value):
            if value.startswith("0o"):
                integer = int(value[2:], 8)
            elif value.startswith("0x"):
                integer = int(value[2:], 16)
            else:
                integer = int(value)
            if len(value) > 100 and abs(integer) > _LARGEST_FLOAT:
                raise _NotFinite
            return integer
        if _FLOAT(value):
            number = float(value)
            if not math.isfinite(number):
                raise _NotFinite
            return number
    except ValueError:  # more digits than int() accepts: leave it to the schema
        return value
    return value


def _short(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _mark_span(file: str, node: Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return Span(file, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def _point(file: str, line: int, col: int) -> Span:
    return Span(file, line, col, line, col)


@dataclass(frozen=True)
class Document:
    """A loaded mesh.yaml: plain ``data`` plus the node tree its spans come from."""

    path: Path
    name: str
    text: str
    data: Any
    root: Node | None = field(default=None, repr=False, compare=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def span(self, path: PathKey) -> Span:
        """Span of the value at ``path``; the nearest existing ancestor's if it is absent."""
        node = self._walk(path)[1]
        return _mark_span(self.name, node) if node is not None else _point(self.name, 1, 1)

    def key_span(self, path: PathKey) -> Span:
        """Span of the key token of the last element of ``path`` (mapping entries only)."""
        if path and isinstance(path[-1], str):
            parent, node = self._walk(path[:-1])
            if parent == len(path) - 1 and isinstance(node, MappingNode):
                entry = self._index(node).get(path[-1])
                if entry is not None:
                    return _mark_span(self.name, entry[0])
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


class _Fatal(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


class _Builder:
    """Walks a composed node tree into plain data, collecting diagnostics."""

    def __init__(self, name: str, aliases_possible: bool) -> None:
        self.name = name
        self.diagnostics: list[Diagnostic] = []
        self.count = 0  # nodes built, aliases expanded
        self.alias_nodes = 0
        self.memo: dict[int, tuple[Any, int] | None] | None = {} if aliases_possible else None

    def error(self, code: str, message: str, node: Node, hint: str | None = None,
              related: tuple[Related, ...] = ()) -> Diagnostic:
        diagnostic = Diagnostic(code, "error", message, _mark_span(self.name, node), hint, related)
        self.diagnostics.append(diagnostic)
        return diagnostic

    def value(self, node: Node, depth: int, via: Node) -> Any:
        """Build a collection node (``via`` is the node that refers to it, for errors)."""
        memo = self.memo
        if memo is not None:
            key = id(node)
            if key in memo:
                done = memo[key]
                if done is None:
                    raise _Fatal(self.error(
                        "E010", "this alias refers to a node that contains it", via,
                        related=(Related(_mark_span(self.name, node), "the anchored node"),)))
                self.alias_nodes += done[1]
                self.count += done[1]
                if self.alias_nodes > MAX_ALIAS_NODES:
                    raise _Fatal(self.error(
                        "E009", f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes", via,
                        hint="write the repeated values out, or use `defaults:` for shared policy"))
                return done[0]
            memo[key] = None
        if depth > MAX_DEPTH:
            raise _Fatal(self.error("E011", f"nesting is deeper than {MAX_DEPTH} levels", node))
        before = self.count
        self.count += len(node.value) + 1
        if node.tag not in (_MAP, _SEQ):
            self.error("E014", f"tag '{_short(node.tag)}' is not supported", node,
                       hint="remove the tag; only plain YAML values are accepted")
        if isinstance(node, MappingNode):
            result: Any = self.mapping(node, depth)
        else:
            assert isinstance(node, SequenceNode)
            result = self.sequence(node, depth)
        if memo is not None:
            memo[id(node)] = (result, self.count - before)
        return result

    def scalar(self, node: ScalarNode) -> Any:
        tag, text = node.tag, node.value
        if tag is _PLAIN:
            return _core_scalar(text)
        if tag == _STR:
            return text
        value = _core_scalar(text)
        expected: Any = _TAGGED.get(tag)
        if expected is None or not isinstance(value, expected) or (
                expected is int and isinstance(value, bool)):
            self.error("E014", f"tag '{_short(tag)}' is not supported on {text!r}", node,
                       hint="remove the tag; only plain YAML values are accepted")
            return text
        return float(value) if tag == _TAG + "float" else value

    def mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        scalar, value = self.scalar, self.value
        for knode, vnode in node.value:
            if knode.__class__ is not ScalarNode:
                self.error("E013", "a mapping key must be a plain value, not a "
                           f"{'mapping' if isinstance(knode, MappingNode) else 'sequence'}",
                           knode)
                continue
            key = knode.value
            if key in out:
                self.duplicate(node, knode)
                continue
            if key == "<<" and knode.tag is _PLAIN:
                self.error("E012", "merge keys ('<<') are not supported", knode,
                           hint="repeat the fields, or put shared policy under `defaults:`")
                continue
            if vnode.__class__ is ScalarNode:
                try:
                    out[key] = _core_scalar(vnode.value) if vnode.tag is _PLAIN else scalar(vnode)
                except _NotFinite:
                    out[key] = self.not_finite(vnode)
            else:
                out[key] = value(vnode, depth + 1, knode)
        return out

    def sequence(self, node: SequenceNode, depth: int) -> list[Any]:
        out: list[Any] = []
        append, scalar, value = out.append, self.scalar, self.value
        for item in node.value:
            if item.__class__ is ScalarNode:
                try:
                    append(_core_scalar(item.value) if item.tag is _PLAIN else scalar(item))
                except _NotFinite:
                    append(self.not_finite(item))
            else:
                append(value(item, depth + 1, item))
        return out

    def not_finite(self, node: ScalarNode) -> str:
        text = node.value if len(node.value) <= 20 else node.value[:17] + "..."
        self.error("E015", f"{text!r} is not a finite number", node,
                   hint="write a finite number; infinity, NaN and numbers beyond 1.8e308 are "
                   "not allowed")
        return str(node.value)

    def duplicate(self, node: MappingNode, knode: ScalarNode) -> None:
        key = knode.value
        first = next(k for k, _ in node.value if isinstance(k, ScalarNode) and k.value == key)
        self.error("E008", f"duplicate key {knode.value!r}: it is already set in this mapping",
                   knode, hint="remove one of the two entries",
                   related=(Related(_mark_span(self.name, first), "first set here"),))


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` of ``text``."""
    line_start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _compose(text: str) -> Node | None:
    """libyaml compose, protected against deep nesting.

    libyaml recurses in C (about 250 bytes of stack per level) and its flow-collection scanner is
    quadratic in the nesting depth. ``bound`` is a cheap upper bound of the depth; above what the
    main thread's stack surely holds, composing runs on a thread with a stack sized for it, and
    an event pre-scan (which stops at MAX_DEPTH) runs first when the text looks deeply nested.
    """
    bound = text.count("[") + text.count("{") + 2 * max(map(len, text.split("\n")))
    if bound <= _MAIN_STACK_LEVELS:
        return _Loader(text).get_single_node()
    if bound > _THREAD_STACK_LEVELS or _flow_depth_estimate(text) > MAX_DEPTH:
        _check_depth(text)  # raises _DepthError early on deep input
    return _in_thread(lambda: _Loader(text).get_single_node(),
                      min(bound, _THREAD_STACK_LEVELS) * _STACK_BYTES_PER_LEVEL + (8 << 20))


_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _flow_depth_estimate(text: str) -> int:
    """Deepest bracket nesting, ignoring quoting: a fast trigger for the exact pre-scan."""
    brackets = text.encode("utf-8").translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets), initial=0))


class _DepthError(Exception):
    def __init__(self, mark: Any) -> None:
        self.mark = mark


def _check_depth(text: str, loader: Any = yaml.CSafeLoader) -> None:
    """Raise _DepthError where the builder would: the root collection is at depth 0."""
    depth = -1
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _DepthError(event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _in_thread(work: Callable[[], Node | None], stack_bytes: int) -> Node | None:
    result: list[Node | None] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    old = threading.stack_size(stack_bytes)
    try:
        thread = threading.Thread(target=run, name="meshgen-compose")
        thread.start()
    finally:
        threading.stack_size(old)
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _yaml_error(name: str, text: str, exc: Exception) -> Diagnostic:
    if isinstance(exc, yaml.reader.ReaderError):
        index = len(text.encode("utf-8")[: exc.position].decode("utf-8", "ignore"))
        line, col = _line_col(text, index)
        return Diagnostic("E004", "error", f"character {chr(exc.character)!r} is not allowed in "
                          f"YAML: {exc.reason}", _point(name, line, col),
                          "remove the character or quote and escape it (\\x..)")
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        span = _point(name, mark.line + 1, mark.column + 1)
        if exc.problem == "but found another document":
            return Diagnostic("E006", "error", "the file holds more than one YAML document",
                              span, "a mesh.yaml holds one document: remove the '---' separator")
        related: tuple[Related, ...] = ()
        if exc.context and exc.context_mark is not None:
            cm = exc.context_mark
            related = (Related(_point(name, cm.line + 1, cm.column + 1), exc.context),)
        return Diagnostic("E004", "error", f"invalid YAML: {exc.problem}", span, None, related)
    return Diagnostic("E004", "error", f"invalid YAML: {exc}", _point(name, 1, 1))


def _nesting_error(name: str, text: str, exc: Exception) -> Diagnostic | None:
    """E011 where the input passes MAX_DEPTH, if ``exc`` is libyaml's own nesting limit.

    libyaml >= 0.2.6 fails at 1000 levels while scanning ahead of the events the pre-scan
    counts; the pure-Python parser has no such limit, is lazy, and stops at MAX_DEPTH + 1.
    """
    if not (isinstance(exc, yaml.MarkedYAMLError) and "nesting" in str(exc.problem)):
        return None
    try:
        _check_depth(text, yaml.SafeLoader)
    except _DepthError as deep:
        mark = deep.mark
        return Diagnostic("E011", "error", f"nesting is deeper than {MAX_DEPTH} levels",
                          _point(name, mark.line + 1, mark.column + 1))
    except yaml.YAMLError:
        return None
    return None


def _too_large(name: str) -> Diagnostic:
    return Diagnostic("E002", "error", f"the file is larger than {MAX_BYTES >> 20} MiB",
                      _point(name, 1, 1), "split the mesh into smaller files")


def loads(
    text: str, name: str, path: Path | None = None
) -> tuple[Document | None, list[Diagnostic]]:
    """Parse ``text`` (diagnostics name it ``name``); the Document is None if anything failed."""
    try:
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        line, col = _line_col(text, exc.start)
        return None, [Diagnostic("E003", "error", "the text holds an unpaired surrogate, which is "
                                 "not valid Unicode", _point(name, line, col))]
    if size > MAX_BYTES:
        return None, [_too_large(name)]
    if text.startswith("\ufeff"):
        text = text[1:]
    return _load_text(text, name, path if path is not None else Path(name))


def _load_text(text: str, name: str, path: Path) -> tuple[Document | None, list[Diagnostic]]:
    try:
        root = _compose(text)
    except _DepthError as exc:
        span = _point(name, exc.mark.line + 1, exc.mark.column + 1)
        return None, [Diagnostic("E011", "error", f"nesting is deeper than {MAX_DEPTH} levels",
                                 span)]
    except (yaml.YAMLError, ValueError, UnicodeError) as exc:
        return None, [_nesting_error(name, text, exc) or _yaml_error(name, text, exc)]
    if root is None or (root.__class__ is ScalarNode and root.tag is _PLAIN and root.value in (
            "", "~", "null", "Null", "NULL")):
        return None, [Diagnostic("E005", "error", "the file is empty", _point(name, 1, 1),
                                 "start with `version: 1`, or run `meshgen init`")]
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else f"the value {root.value!r}"
        return None, [Diagnostic("E007", "error", f"the document is {kind}, not a mapping",
                                 _mark_span(name, root),
                                 "a mesh.yaml is a mapping with `version`, `mesh` and `services`")]
    builder = _Builder(name, "&" in text)
    try:
        data = builder.value(root, 0, root)
    except _Fatal:
        return None, builder.diagnostics
    if builder.diagnostics:
        return None, sorted(builder.diagnostics, key=lambda d: d.sort_key)
    return Document(path, name, text, data, root), []


def load(path: Path) -> tuple[Document | None, list[Diagnostic]]:
    """Read and parse ``path``; diagnostics name the file as given."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, [Diagnostic("E001", "error", f"cannot read {name!r}: {reason.lower()}",
                                 _point(name, 1, 1))]
    if len(raw) > MAX_BYTES:
        return None, [_too_large(name)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start].decode("utf-8", "replace")
        line, col = _line_col(prefix, len(prefix))
        return None, [Diagnostic("E003", "error", f"byte 0x{raw[exc.start]:02x} is not valid "
                                 "UTF-8", _point(name, line, col), "save the file as UTF-8")]
    return loads(text, name, path)
