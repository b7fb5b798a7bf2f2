"""A composed node tree -> plain dicts/lists/scalars, within the alias and nesting limits.

Theory of operation: :func:`build` walks the tree once. Scalars follow the YAML 1.2 core
schema (``yes``/``no``/``on``/``off`` stay strings; mapping keys are always the key's raw
text). Aliases share the built object, and the nodes they add are counted so a billion-laughs
file fails fast (E009); an alias inside its own anchor (E010) and nesting past ``MAX_DEPTH``
(E011) stop the walk. Everything else (duplicate keys E008, merge keys E012, collection keys
E013, unknown tags E014, non-finite numbers E015) is reported and the walk goes on, so one run
shows every such error.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

from meshgen.pyyaml import MappingNode, Node, ScalarNode, SequenceNode

from .diagnostics import Diagnostic, Related
from .source_compose import MAP, MAX_DEPTH, PLAIN, SEQ, STR, TAG, mark_span

MAX_ALIAS_NODES = 1_000_000
"""Most nodes that aliases may add to the document by repetition."""

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
_FLOAT_TAG = TAG + "float"
_TAGGED: dict[str, Any] = {
    TAG + "int": int,
    _FLOAT_TAG: (int, float),
    TAG + "bool": bool,
    TAG + "null": type(None),
}
_NUMBER_START = frozenset("0123456789+-.")
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+").fullmatch
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?").fullmatch
_NO_TAGS = "remove the tag; only plain YAML values are accepted"


class _NotFinite(Exception):
    """A scalar that YAML would read as infinity or NaN."""


class _Fatal(Exception):
    """An error after which the walk stops (it is already in the builder's diagnostics)."""


def build(root: Node, name: str, aliases_possible: bool) -> tuple[Any, list[Diagnostic]]:
    """Plain data of the collection ``root`` and the diagnostics (None if the walk stopped).

    ``aliases_possible`` (the text holds an ``&``) turns on alias tracking; diagnostics name
    the file ``name``, sorted by position unless the walk stopped at its first fatal error.
    """
    builder = _Builder(name, aliases_possible)
    try:
        data = builder.value(root, 0, root)
    except _Fatal:
        return None, builder.diagnostics
    return data, sorted(builder.diagnostics, key=lambda d: d.sort_key)


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
    return "!!" + tag[len(TAG) :] if tag.startswith(TAG) else tag


class _Builder:
    """Walks a composed node tree into plain data, collecting diagnostics."""

    def __init__(self, name: str, aliases_possible: bool) -> None:
        self.name = name
        self.diagnostics: list[Diagnostic] = []
        self.count = 0  # nodes built, aliases expanded
        self.alias_nodes = 0
        self.memo: dict[int, tuple[Any, int] | None] | None = {} if aliases_possible else None
        self.plain: dict[str, Any] = {}  # a plain scalar's text -> its value (most repeat)

    def error(
        self,
        code: str,
        message: str,
        node: Node,
        hint: str | None = None,
        related: tuple[Related, ...] = (),
    ) -> Diagnostic:
        diagnostic = Diagnostic(code, "error", message, mark_span(self.name, node), hint, related)
        self.diagnostics.append(diagnostic)
        return diagnostic

    def value(self, node: Node, depth: int, via: Node) -> Any:
        """Build a collection node (``via`` is the node that refers to it, for errors)."""
        memo = self.memo
        if memo is not None:
            key = id(node)
            if key in memo:
                return self.alias(node, memo[key], via)
            memo[key] = None
        if depth > MAX_DEPTH:
            self.error("E011", f"nesting is deeper than {MAX_DEPTH} levels", node)
            raise _Fatal
        before = self.count
        self.count += len(node.value) + 1
        if node.tag not in (MAP, SEQ):
            self.error("E014", f"tag '{_short(node.tag)}' is not supported", node, _NO_TAGS)
        if isinstance(node, MappingNode):
            result: Any = self.mapping(node, depth)
        else:
            assert isinstance(node, SequenceNode)
            result = self.sequence(node, depth)
        if memo is not None:
            memo[id(node)] = (result, self.count - before)
        return result

    def alias(self, node: Node, done: tuple[Any, int] | None, via: Node) -> Any:
        """The value already built for ``node`` (None: still being built, so recursive)."""
        if done is None:
            anchored = Related(mark_span(self.name, node), "the anchored node")
            self.error(
                "E010", "this alias refers to a node that contains it", via, related=(anchored,)
            )
            raise _Fatal
        self.alias_nodes += done[1]
        self.count += done[1]
        if self.alias_nodes > MAX_ALIAS_NODES:
            self.error(
                "E009",
                f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes",
                via,
                hint="write the repeated values out, or use `defaults:` for shared policy",
            )
            raise _Fatal
        return done[0]

    def scalar(self, node: ScalarNode) -> Any:
        """A scalar's value; a plain one's is remembered in ``plain``, where :meth:`mapping` and
        :meth:`sequence` look first (at 10,000 services 500,000 plain scalars have 90,000
        texts)."""
        tag, text = node.tag, node.value
        try:
            if tag is PLAIN:
                value = self.plain[text] = _core_scalar(text)
                return value
            if tag == STR:
                return text
            value = _core_scalar(text)
        except _NotFinite:
            return self.not_finite(node)
        expected: Any = _TAGGED.get(tag)
        if (
            expected is None
            or not isinstance(value, expected)
            or (expected is int and isinstance(value, bool))
        ):
            self.error("E014", f"tag '{_short(tag)}' is not supported on {text!r}", node, _NO_TAGS)
            return text
        return float(value) if tag == _FLOAT_TAG else value

    def mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        plain, scalar, value = self.plain, self.scalar, self.value
        for knode, vnode in node.value:
            if knode.__class__ is not ScalarNode:
                kind = "mapping" if isinstance(knode, MappingNode) else "sequence"
                self.error("E013", f"a mapping key must be a plain value, not a {kind}", knode)
                continue
            key = knode.value
            if key in out:
                self.duplicate(node, knode)
                continue
            if key == "<<" and knode.tag is PLAIN:
                self.error(
                    "E012",
                    "merge keys ('<<') are not supported",
                    knode,
                    hint="repeat the fields, or put shared policy under `defaults:`",
                )
                continue
            if vnode.__class__ is ScalarNode:
                got = plain.get(vnode.value, _MISSING) if vnode.tag is PLAIN else _MISSING
                out[key] = scalar(vnode) if got is _MISSING else got
            else:
                out[key] = value(vnode, depth + 1, knode)
        return out

    def sequence(self, node: SequenceNode, depth: int) -> list[Any]:
        out: list[Any] = []
        append, plain, scalar, value = out.append, self.plain, self.scalar, self.value
        for item in node.value:
            if item.__class__ is ScalarNode:
                got = plain.get(item.value, _MISSING) if item.tag is PLAIN else _MISSING
                append(scalar(item) if got is _MISSING else got)
            else:
                append(value(item, depth + 1, item))
        return out

    def not_finite(self, node: ScalarNode) -> str:
        text = node.value if len(node.value) <= 20 else node.value[:17] + "..."
        self.error(
            "E015",
            f"{text!r} is not a finite number",
            node,
            hint="write a finite number; infinity, NaN and numbers beyond 1.8e308 are not allowed",
        )
        return str(node.value)

    def duplicate(self, node: MappingNode, knode: ScalarNode) -> None:
        key = knode.value
        first = next(k for k, _ in node.value if isinstance(k, ScalarNode) and k.value == key)
        self.error(
            "E008",
            f"duplicate key {knode.value!r}: it is already set in this mapping",
            knode,
            hint="remove one of the two entries",
            related=(Related(mark_span(self.name, first), "first set here"),),
        )
