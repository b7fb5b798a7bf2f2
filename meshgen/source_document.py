"""The loaded spec: plain data plus the node trees every span comes from, one per input file.

Theory of operation: a :class:`Layer` is one parsed input file (mesh.yaml or an overlay) with
its node tree; it answers "where is the value at this path?" for its own file, resolving
spans lazily by walking the tree (each mapping's key index is built on first use). A
:class:`Document` is the data the later stages see -- mesh.yaml with the overlays merged on top
(:mod:`meshgen.source_overlay`) -- and remembers which overlay wrote which path (``writers``),
so a span always points into the file that wrote the value: the nearest existing path of the
merged data is looked up in the layer that last wrote it. Without overlays the base layer
answers directly, so the common case pays nothing extra.

Both are plain classes with read-only (``Final``) fields rather than frozen dataclasses: a
validate then imports nothing that makes dataclasses (``dataclasses`` with ``inspect`` cost it
~25 ms on a slow machine).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from meshgen.pyyaml import MappingNode, Node, ScalarNode, SequenceNode

from .diagnostics import Span, split_lines
from .source_compose import mark_span, point
from .source_files import FileFacts
from .source_overlay import Writers, writer_of

PathKey = tuple[str | int, ...]


class Layer:
    """One input file as parsed: ``name`` is how diagnostics name it."""

    def __init__(self, path: Path, name: str, text: str, root: Node | None) -> None:
        self.path: Final = path
        self.name: Final = name
        self.text: Final = text
        self.root: Final = root
        self._cache: Final[dict[str, Any]] = {}

    def span(self, path: PathKey) -> Span:
        """Span of the value at ``path``; the nearest existing ancestor's if it is absent."""
        node = self.walk(path)[1]
        return mark_span(self.name, node) if node is not None else point(self.name, 1, 1)

    def key_span(self, path: PathKey) -> Span:
        """Span of the key token of the last element of ``path`` (mapping entries only)."""
        if path and isinstance(path[-1], str):
            parent, node = self.walk(path[:-1])
            if parent == len(path) - 1 and isinstance(node, MappingNode):
                entry = self._index(node).get(path[-1])
                if entry is not None:
                    return mark_span(self.name, entry[0])
        return self.span(path)

    def line_text(self, line: int) -> str:
        """The text of 1-based ``line`` without its line break ("" past the end)."""
        lines: list[str] | None = self._cache.get("lines")
        if lines is None:
            lines = split_lines(self.text)
            self._cache["lines"] = lines
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def walk(self, path: PathKey) -> tuple[int, Node | None]:
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


class Document:
    """A loaded mesh.yaml (with its overlays merged): plain ``data``, the node trees its spans
    come from, and ``files``: what the file system says about the files it names
    (:mod:`meshgen.source_files`). ``path``/``name``/``text``/``root`` are mesh.yaml's own;
    ``overlays`` the overlay files in the order they were applied; ``base_dir`` is where
    relative paths resolve (mesh.yaml's folder; the working directory for stdin)."""

    def __init__(
        self,
        path: Path,
        name: str,
        text: str,
        data: Any,
        root: Node | None,
        files: Mapping[str, FileFacts],
        overlays: tuple[Layer, ...],
        writers: Writers,
        base_dir: Path | None,
    ) -> None:
        self.path: Final = path
        self.name: Final = name
        self.text: Final = text
        self.data: Final = data
        self.root: Final = root
        self.files: Final = files
        self.overlays: Final = overlays
        self.writers: Final = writers
        self.base_dir: Final = base_dir

    @cached_property
    def base(self) -> Layer:
        """mesh.yaml itself, as a layer."""
        return Layer(self.path, self.name, self.text, self.root)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """mesh.yaml, then each overlay in the order applied."""
        return (self.base, *self.overlays)

    @property
    def folder(self) -> Path:
        """Where relative file paths resolve: mesh.yaml's folder (given, or its parent)."""
        return self.base_dir if self.base_dir is not None else self.path.parent

    def file_of(self, path: PathKey) -> str:
        """The name of the file that wrote the value at ``path`` (mesh.yaml's if none did)."""
        return self._writer(path).name

    def span(self, path: PathKey) -> Span:
        """Span of the value at ``path`` in the file that wrote it; the nearest existing
        ancestor's if it is absent."""
        if not self.overlays:
            return self.base.span(path)
        found = _existing(self.data, path)
        return self._writer(found).span(found)

    def key_span(self, path: PathKey) -> Span:
        """Span of the key token of the last element of ``path`` (mapping entries only)."""
        if not self.overlays:
            return self.base.key_span(path)
        found = _existing(self.data, path)
        if found != path:
            return self._writer(found).span(found)
        return self._writer(path).key_span(path)

    def line_text(self, line: int) -> str:
        """The text of mesh.yaml's 1-based ``line`` ("" past the end)."""
        return self.base.line_text(line)

    def line_in(self, file: str, line: int) -> str:
        """The text of ``line`` of the input named ``file`` ("" if it is not an input)."""
        for layer in self.layers:
            if layer.name == file:
                return layer.line_text(line)
        return ""

    def sources(self) -> dict[str, Layer]:
        """Every input by the name diagnostics use, for the text renderer's quotes."""
        return {layer.name: layer for layer in reversed(self.layers)}

    def unit_at(self, span: Span) -> PathKey | None:
        """The part of the spec (:mod:`meshgen.units`) whose text holds ``span``; None when it
        lies outside every part. A list item's index is the same after merging (lists are
        replaced whole), so an overlay's spans map to the merged spec's parts."""
        layer = next((item for item in self.layers if item.name == span.file), None)
        if layer is None or not isinstance(layer.root, MappingNode):
            return None
        at = (span.line - 1, span.col - 1)
        for key, value in layer.root.value:
            if not isinstance(key, ScalarNode) or not _covers(key, value, at):
                continue
            if key.value == "monitoring" and isinstance(value, MappingNode):
                for inner, items in value.value:
                    if isinstance(inner, ScalarNode) and inner.value in ("alerts", "slos"):
                        index = _item_at(items, at)
                        if index is not None:
                            return ("monitoring", inner.value, index)
                return None
            if key.value == "services" and isinstance(value, MappingNode):
                for name, service in value.value:
                    if isinstance(name, ScalarNode) and _covers(name, service, at):
                        return ("services", name.value)
                return None
            if key.value in ("routes", "listeners", "access"):
                index = _item_at(value, at)
                return None if index is None else (key.value, index)
            return None
        return None

    def _writer(self, path: PathKey) -> Layer:
        index = writer_of(self.writers, path)
        return self.base if index is None else self.overlays[index]


def _existing(data: Any, path: PathKey) -> PathKey:
    """The longest prefix of ``path`` that exists in ``data``."""
    node = data
    for depth, step in enumerate(path):
        if isinstance(node, dict) and isinstance(step, str) and step in node:
            node = node[step]
            continue
        if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
            continue
        return path[:depth]
    return path


def _covers(first: Node, last: Node, at: tuple[int, int]) -> bool:
    """Whether 0-based (line, column) ``at`` lies from ``first``'s start to ``last``'s end."""
    start, end = first.start_mark, last.end_mark
    return (start.line, start.column) <= at <= (end.line, end.column)


def _item_at(node: Node, at: tuple[int, int]) -> int | None:
    """The index of the item of sequence ``node`` that holds ``at``."""
    if not isinstance(node, SequenceNode):
        return None
    for index, item in enumerate(node.value):
        if _covers(item, item, at):
            return index
    return None
