"""Overlays: partial mesh.yaml files merged on top of mesh.yaml, in order.

Merge rules (docs/reference.md, Overlays): mappings merge key by key, lists and scalars
replace whole, ``null`` removes a key. Nothing is validated here: the schema and the checks run
on the merged result, so an overlay alone need not be valid.

Theory of operation: :func:`merge` copies only the mappings it changes (the inputs are never
mutated) and records in :data:`Writers`, a small trie keyed by path steps, the index of the
overlay that wrote each value it set. A value nobody overlaid has no mark on its path and
belongs to mesh.yaml; otherwise the deepest mark on its path names the overlay that wrote it
(:func:`writer_of`). Replacing or removing a value drops the marks below it, so the trie stays
as small as the overlays themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Writers = dict[str | int, tuple[int | None, "Writers"]]
"""Path step -> (index of the overlay that set this value, or None when merged into; deeper)."""


def merge(
    base: dict[str, Any], overlays: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], Writers]:
    """``base`` with every overlay merged on top in order, and who wrote what."""
    writers: Writers = {}
    merged = base
    for index, overlay in enumerate(overlays):
        merged = _merge(merged, overlay, writers, index)
    return merged, writers


def _merge(
    target: dict[str, Any], overlay: dict[str, Any], marks: Writers, index: int
) -> dict[str, Any]:
    out = dict(target)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
            marks.pop(key, None)
            continue
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            mark, below = marks.get(key, (None, {}))
            out[key] = _merge(current, value, below, index)
            marks[key] = (mark, below)
        else:
            out[key] = value
            marks[key] = (index, {})
    return out


def writer_of(writers: Writers, path: Sequence[str | int]) -> int | None:
    """Index of the overlay that wrote the value at ``path``; None: mesh.yaml did."""
    found: int | None = None
    marks = writers
    for step in path:
        entry = marks.get(step)
        if entry is None:
            break
        mark, marks = entry
        if mark is not None:
            found = mark
    return found
