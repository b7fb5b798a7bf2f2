"""libyaml composition of mesh.yaml into a node tree, safe against deep nesting.

Theory of operation: :class:`Loader` is libyaml's composer (``yaml._yaml.CParser``) with its
resolver replaced by a trivial one that only tells plain scalars (:data:`PLAIN`) from quoted
ones and collections; :mod:`meshgen.source_build` applies the YAML 1.2 core schema itself.

libyaml recurses in C (about 250 bytes of stack per level) and its flow-collection scanner is
quadratic in the nesting depth, so :func:`compose` bounds the depth cheaply first: above what
the main thread's stack surely holds, composing runs on a thread whose stack is sized for the
worst case, and when the text looks deeply nested the event pre-scan :func:`check_depth`, which
stops at ``MAX_DEPTH``, runs before it. Nothing here makes diagnostics: errors are raised.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate
from typing import Any

from meshgen.pyyaml import CParser, MappingNode, Node, ScalarNode, yaml

from .diagnostics import Span

MAX_DEPTH = 100
"""Deepest accepted nesting of mappings and sequences."""

_MAIN_STACK_LEVELS = 4096  # libyaml needs ~250 bytes of C stack per level; 8 MiB main stack
_THREAD_STACK_LEVELS = 1_000_000
_STACK_BYTES_PER_LEVEL = 512

PLAIN = "?"  # the tag Loader gives plain (unquoted, untagged) scalars
TAG = "tag:yaml.org,2002:"
STR, MAP, SEQ = TAG + "str", TAG + "map", TAG + "seq"


class Loader(CParser):
    """libyaml composer with a resolver that only tells plain scalars from the rest."""

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return PLAIN if implicit[0] else STR
        return MAP if kind is MappingNode else SEQ

    def descend_resolver(self, parent: Node | None, index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


def mark_span(file: str, node: Node) -> Span:
    """The 1-based span a composed node covers."""
    start, end = node.start_mark, node.end_mark
    return Span(file, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


def point(file: str, line: int, col: int) -> Span:
    """An empty span at 1-based ``line`` and ``col``."""
    return Span(file, line, col, line, col)


class DepthError(Exception):
    """The input nests deeper than MAX_DEPTH; ``mark`` is where it first does."""

    def __init__(self, mark: Any) -> None:
        self.mark = mark


def compose(text: str) -> Node | None:
    """libyaml compose, protected against deep nesting (raises DepthError on deep input)."""
    bound = text.count("[") + text.count("{") + 2 * max(map(len, text.split("\n")))
    if bound <= _MAIN_STACK_LEVELS:
        return Loader(text).get_single_node()
    if bound > _THREAD_STACK_LEVELS or _flow_depth_estimate(text) > MAX_DEPTH:
        check_depth(text)
    return _in_thread(
        lambda: Loader(text).get_single_node(),
        min(bound, _THREAD_STACK_LEVELS) * _STACK_BYTES_PER_LEVEL + (8 << 20),
    )


_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _flow_depth_estimate(text: str) -> int:
    """Deepest bracket nesting, ignoring quoting: a fast trigger for the exact pre-scan."""
    brackets = text.encode("utf-8").translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets), initial=0))


def check_depth(text: str, loader: Any = yaml.CSafeLoader) -> None:
    """Raise DepthError where the builder would: the root collection is at depth 0."""
    depth = -1
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise DepthError(event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _in_thread(work: Callable[[], Node | None], stack_bytes: int) -> Node | None:
    import threading  # here: most inputs compose on the main thread (a validate saves ~1 ms)

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
