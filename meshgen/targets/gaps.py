"""Capability gaps: what a target cannot express of a mesh, and what its engine does instead.

Theory of operation: a target that cannot express everything (HAProxy, Envoy) has a ``gaps``
function from the tables to a list of :class:`Gap`. A gap names its owner by kind and name
(``route 'split'``), the field (``fault.delay``) and what the engine does instead. Tables carry
no source positions, so the pipeline locates each gap in mesh.yaml afterwards (:func:`locate`:
the owner's node, then the field under it, or where a merged value was written) and writes
``DIST/<target>/GAPS.txt`` (:func:`gaps_text`, one ``FILE:LINE:COL: owner field: instead`` line
per gap). Gaps become warnings only for targets named with ``--target``; a plain build lists
them in the file and stays quiet, so an SRV mesh builds ``--strict`` without an Envoy warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Literal

from meshgen.diagnostics import Diagnostic, Span

if TYPE_CHECKING:
    from meshgen.model import Mesh, PathKey
    from meshgen.source import Document

GapOwner = Literal["route", "service", "listener", "access", "mesh"]
CODE = "W701"


@dataclass(frozen=True, slots=True)
class Gap:
    """``name`` is the route, service or listener name, or the access rule's index."""

    owner: GapOwner
    name: str
    field: str  # dotted, under the owner: "fault.delay", "tls.subject_alt_names"
    instead: str  # what the engine does instead

    @property
    def what(self) -> str:
        if self.owner == "access":
            return f"access[{self.name}] {self.field}".rstrip()
        if self.owner == "mesh":
            return self.field
        return f"{self.owner} '{self.name}' {self.field}"


def _parts(field: str) -> PathKey:
    return tuple(p for p in field.split(".") if p)


def locate(gap: Gap, mesh: Mesh) -> PathKey:
    """The source path of the gap's value: under its owner, or where a merged value came from."""
    parts = _parts(gap.field)
    if gap.owner == "route":
        route = next((r for r in mesh.routes if r.name == gap.name), None)
        if route is None:
            return ()
        if route.synthetic:  # a default route: the service it was made for
            service = mesh.services.get(route.to[0].service) if route.to else None
            return service.path if service is not None else ()
        return (*route.path, *parts)
    if gap.owner == "service":
        service = mesh.services.get(gap.name)
        if service is None:
            return ()
        for depth in range(len(parts), 0, -1):  # the field, else where its parent was set
            origin = service.origin(".".join(str(p) for p in parts[:depth]))
            if origin.kind != "built-in":
                return origin.path
        return (*service.path, *parts)
    if gap.owner == "listener":
        listener = next((x for x in mesh.listeners if x.name == gap.name), None)
        if listener is None or listener.synthetic:
            return ()
        return (*listener.path, *parts)
    if gap.owner == "access":
        return ("access", int(gap.name), *parts)
    return parts


def located(gaps: Iterable[Gap], mesh: Mesh, doc: Document) -> list[tuple[Span, Gap]]:
    """Each gap with its span, sorted by position then text (duplicates dropped)."""
    unique = dict.fromkeys(gaps)
    found = [(doc.key_span(locate(g, mesh)), g) for g in unique]
    return sorted(found, key=_position)


def _position(found: tuple[Span, Gap]) -> tuple[str, int, int, int, int, str, str]:
    """Span order (its fields in order) then text, as plain tuples: compared in C."""
    s, g = found
    return (s.file, s.line, s.col, s.end_line, s.end_col, g.what, g.instead)


def gaps_text(header: str, engine: str, found: list[tuple[Span, Gap]]) -> str:
    """``DIST/<target>/GAPS.txt``: one line per gap, or a line saying there is none; each
    names the file that wrote the value by its base name, never by a machine path."""
    lines = [
        f"# {header}",
        f"# What {engine} cannot express of this mesh, and what it does instead.",
        "# FILE:LINE:COL: field: what the engine does instead",
    ]
    names = {file: PurePath(file).name for file in {s.file for s, _ in found}}  # a few files
    lines += [f"{names[s.file]}:{s.line}:{s.col}: {g.what}: {g.instead}" for s, g in found]
    if not found:
        lines.append(f"# none: {engine} expresses every field this mesh sets")
    return "\n".join(lines) + "\n"


def warnings(target: str, engine: str, found: list[tuple[Span, Gap]]) -> list[Diagnostic]:
    """One W701 per gap, for a target named with ``--target``."""
    hint = f"listed in DIST/{target}/GAPS.txt; see docs/{target}.md"
    return [
        Diagnostic(CODE, "warning", f"{engine} cannot express {g.what}: {g.instead}", s, hint)
        for s, g in found
    ]
