"""Read mesh.yaml (and its overlays) into plain data plus node trees that know every position.

Theory of operation: :func:`read` gets each input's text (a file, or stdin for ``-``) within
the size limit and as UTF-8; :func:`parse` composes a text with libyaml
(:mod:`meshgen.source_compose`, safe against deep nesting) and walks the node tree once into
plain dicts/lists with YAML 1.2 core-schema scalars (:mod:`meshgen.source_build`). Overlays
are merged on top of mesh.yaml in order (:mod:`meshgen.source_overlay`), and facts about the
files the merged spec names are gathered (:mod:`meshgen.source_files`), so no later stage
touches the file system. The node trees are kept in the :class:`Document`
(:mod:`meshgen.source_document`); spans are resolved lazily by path, so the happy path pays
nothing for them. The trees are millions of acyclic objects: callers that load large specs
should pause the cyclic garbage collector around the whole build
(``meshgen.pipeline.collector_paused`` does).

Safety: only safe YAML (no Python tags; unknown tags are errors), a size limit (``MAX_BYTES``),
an alias expansion limit (``MAX_ALIAS_NODES``) and a nesting limit (``MAX_DEPTH``). Merge keys
(``<<``) are rejected: YAML 1.2 dropped them, and ``defaults:`` covers the use case. Numbers
must be finite: ``.inf``, ``.nan``, floats that overflow (``1e999``) and integers too large to
become a float are errors, so no later stage has to guard its arithmetic against them.
Syntax errors are explained in meshgen's words where the mistake is a common one
(:mod:`meshgen.source_errors`, imported only for an input that does not load: its patterns
cost a validate of a valid spec ~1 ms).
"""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshgen.pyyaml import MappingNode, Node, ScalarNode, SequenceNode, yaml
from meshgen.record import Record

from .diagnostics import Diagnostic, Span
from .source_build import MAX_ALIAS_NODES, build
from .source_compose import MAX_DEPTH, PLAIN, DepthError, compose, mark_span, point
from .source_document import Document, Layer, PathKey
from .source_files import gather
from .source_overlay import Writers, merge

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "STDIN",
    "Document",
    "Input",
    "Layer",
    "PathKey",
    "load",
    "load_inputs",
    "loads",
    "read",
]

MAX_BYTES = 32 * 1024 * 1024
"""Largest accepted input (UTF-8 bytes)."""

STDIN = "<stdin>"
"""How diagnostics name the standard input (given as ``-``)."""


class Input(Record):
    """One input's text as read; ``name`` is how diagnostics name it (the path as given)."""

    path: Path
    name: str
    text: str


def _error(code: str, message: str, span: Span, hint: str | None = None) -> list[Diagnostic]:
    """The one error that stops a load."""
    return [Diagnostic(code, "error", message, span, hint)]


def _too_large(name: str) -> list[Diagnostic]:
    message = f"the file is larger than {MAX_BYTES >> 20} MiB"
    hint = "the limit guards against runaway input (about 20,000 services fit); split the mesh"
    return _error("E002", message, point(name, 1, 1), hint)


def read(path: Path) -> tuple[Input | None, list[Diagnostic]]:
    """The text of ``path`` (``-``: standard input), or the diagnostic why it cannot be had."""
    stdin = str(path) == "-"
    name = STDIN if stdin else str(path)
    try:
        if stdin:
            raw = sys.stdin.buffer.read(MAX_BYTES + 1)
        else:
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
        from .source_errors import line_col

        prefix = raw[: exc.start].decode("utf-8", "replace")
        line, col = line_col(prefix, len(prefix))
        message = f"byte 0x{raw[exc.start]:02x} is not valid UTF-8"
        return None, _error("E003", message, point(name, line, col), "save the file as UTF-8")
    return Input(path, name, text.removeprefix("\ufeff")), []


def _checked_text(text: str, name: str) -> tuple[str | None, list[Diagnostic]]:
    """``text`` without a byte-order mark, if it is valid Unicode within the size limit."""
    try:
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        from .source_errors import line_col

        line, col = line_col(text, exc.start)
        message = "the text holds an unpaired surrogate, which is not valid Unicode"
        return None, _error("E003", message, point(name, line, col))
    if size > MAX_BYTES:
        return None, _too_large(name)
    return text.removeprefix("\ufeff"), []


def parse(
    text: str, name: str, overlay: bool = False
) -> tuple[tuple[Node, Any] | None, list[Diagnostic]]:
    """(node tree, plain data) of one input, or None, and the diagnostics.

    Errors the builder recovers from (a duplicate key keeps its first value, a merge key or a
    collection key is left out, an unsupported tag or a non-finite number becomes text) come
    with the tree and data; the others come alone. An empty overlay changes nothing.
    """
    try:
        root = compose(text)
    except DepthError as exc:
        from .source_errors import too_deep

        return None, [too_deep(name, exc.mark)]
    except (yaml.YAMLError, ValueError, UnicodeError) as exc:
        from .source_errors import nesting_error, yaml_error

        return None, [nesting_error(name, text, exc) or yaml_error(name, text, exc)]
    if root is None or (
        root.__class__ is ScalarNode
        and root.tag is PLAIN
        and root.value in ("", "~", "null", "Null", "NULL")
    ):
        if overlay:
            return (MappingNode("tag:yaml.org,2002:map", []), {}), []
        hint = "start with `version: 1`, or run `meshgen init`"
        return None, _error("E005", "the file is empty", point(name, 1, 1), hint)
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else f"the value {root.value!r}"
        hint = (
            "an overlay is a partial mesh.yaml: a mapping of the fields it changes"
            if overlay
            else "a mesh.yaml is a mapping with `version`, `mesh` and `services`"
        )
        message = f"the document is {kind}, not a mapping"
        return None, _error("E007", message, mark_span(name, root), hint)
    data, diagnostics = build(root, name, "&" in text)
    return (None if data is None else (root, data)), diagnostics


def load_inputs(
    spec: Input, overlays: Sequence[Input] = (), partial: bool = False
) -> tuple[Document | None, list[Diagnostic]]:
    """Parse mesh.yaml and its overlays and merge them; every input's errors are reported.

    The Document is None when there is any error, unless ``partial``: then it is None only
    when an input has no data at all, and comes with the errors the builder recovered from
    (the pipeline checks the rest of the spec; see :meth:`Document.unit_at`).
    """
    diagnostics: list[Diagnostic] = []
    inputs: list[Input] = []
    trees: list[tuple[Node, Any]] = []
    for index, item in enumerate((spec, *overlays)):
        text, problems = _checked_text(item.text, item.name)
        if text is not None:
            inputs.append(Input(item.path, item.name, text))
            tree, problems = parse(text, item.name, overlay=index > 0)
            if tree is not None:
                trees.append(tree)
        diagnostics += problems
    diagnostics.sort(key=lambda d: d.sort_key)
    if len(trees) < 1 + len(overlays) or (diagnostics and not partial):
        return None, diagnostics
    (base, *layers), ((root, data), *overlaid) = inputs, trees
    folder = base.path.parent
    writers: Writers = {}
    if overlaid:
        data, writers = merge(data, [tree_data for _, tree_data in overlaid])
    return (
        Document(
            base.path,
            base.name,
            base.text,
            data,
            root,
            gather(data, folder),
            tuple(
                Layer(item.path, item.name, item.text, tree_root)
                for item, (tree_root, _) in zip(layers, overlaid, strict=True)
            ),
            writers,
            folder,
        ),
        diagnostics,
    )


def loads(
    text: str, name: str, path: Path | None = None
) -> tuple[Document | None, list[Diagnostic]]:
    """Parse ``text`` (diagnostics name it ``name``); the Document is None if anything failed."""
    return load_inputs(Input(path if path is not None else Path(name), name, text))


def load(path: Path, overlays: Sequence[Path] = ()) -> tuple[Document | None, list[Diagnostic]]:
    """Read and parse ``path`` with ``overlays`` merged on top; diagnostics name files as given.

    ``-`` (once, as mesh.yaml or an overlay) reads standard input; relative paths in the spec
    then resolve against the working directory when it is mesh.yaml.
    """
    inputs: list[Input] = []
    diagnostics: list[Diagnostic] = []
    for item in (path, *overlays):
        got, problems = read(item)
        diagnostics += problems
        if got is not None:
            inputs.append(got)
    if diagnostics:
        return None, diagnostics
    return load_inputs(inputs[0], inputs[1:])
