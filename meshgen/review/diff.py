"""``meshgen plan``: the semantic difference between two meshes, each a mesh.yaml or a DIST.

Theory of operation: both sides become runtime :class:`~meshgen.runtime.tables.Tables` (a
mesh.yaml through the compiler, a DIST through :mod:`.dist_tables`, which never runs its code),
and the runtime's own :func:`~meshgen.runtime.app.table_changes.table_changes` lists the
differences, so ``plan`` says exactly what a reload of the new DIST would log. A mesh.yaml side
also has its model, so each change gets ``where``: the FILE:LINE that wrote the value (an
overlay's, a ``defaults:`` entry's for an inherited policy); the new side's for what was added
or changed, the old side's for what was removed (or that side's, when only it has the value:
an access rule that was deleted). A DIST carries no provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meshgen.diagnostics import Diagnostic
from meshgen.model import Listener, Mesh, Origin, PathKey
from meshgen.plan import to_tables
from meshgen.review.dist_tables import read_dist_tables
from meshgen.runtime.app.loader import TablesError
from meshgen.runtime.app.table_changes import Change, table_changes
from meshgen.runtime.app.table_view import target_name
from meshgen.runtime.tables import Tables


@dataclass(frozen=True)
class Side:
    """One side of a plan: ``label`` as given on the command line; ``mesh`` None for a DIST."""

    label: str
    tables: Tables
    mesh: Mesh | None


class SideError(Exception):
    """A side that cannot be read at all (a DIST that is not one); the message says why."""


def load_side(path: Path, overlays: Sequence[Path]) -> tuple[Side | None, list[Diagnostic]]:
    """A DIST folder, or a mesh.yaml (``-``: standard input) with ``overlays`` merged on top.

    Returns the side, or None with the diagnostics that make the mesh.yaml invalid; raises
    :class:`SideError` for an unreadable DIST.
    """
    if path.is_dir():
        try:
            return Side(str(path), read_dist_tables(path), None), []
        except TablesError as exc:
            raise SideError(f"{path} is not a DIST meshgen can read: {exc}") from exc
    from meshgen.pipeline import load_mesh

    mesh, diagnostics = load_mesh(path, overlays)
    if mesh is None:
        return None, diagnostics
    return Side(str(path), to_tables(mesh), mesh), diagnostics


@dataclass(frozen=True)
class Planned:
    """A change and where it was written (``FILE:LINE``; None when unknown, e.g. a DIST)."""

    change: Change
    where: str | None


def plan(old: Side, new: Side) -> list[Planned]:
    """Every change from ``old`` to ``new``, located where a mesh.yaml side allows."""
    out: list[Planned] = []
    for c in table_changes(old.tables, new.tables):
        first, second = (new, old) if c.new is not None else (old, new)
        out.append(Planned(c, _where(first, c) or _where(second, c)))
    return out


def _where(side: Side, change: Change) -> str | None:
    mesh = side.mesh
    if mesh is None or mesh.source is None:
        return None
    path = _locate(mesh, change)
    if path is None:
        return None
    span = mesh.source.span(path)
    return f"{span.file}:{span.line}"


def _dotted(field: str) -> PathKey:
    return tuple(field.split(".")) if field else ()


def _origin_path(origin: Origin) -> PathKey | None:
    return origin.path if origin.kind != "built-in" else None


def _locate(mesh: Mesh, change: Change) -> PathKey | None:
    """The model path of what ``change`` names in ``mesh`` (None: nowhere in the file)."""
    section, subject, field = change.section, change.subject, change.field
    if section == "mesh":
        return {"admin": ("admin",), "alertmanager": ("monitoring", "alertmanager")}.get(
            field, ("mesh", field)
        )
    if section == "listener":
        lst = next((x for x in mesh.listeners if x.name == subject), None)
        return None if lst is None or lst.synthetic else _locate_listener(lst, field)
    if section == "route":
        return _locate_route(mesh, subject, field)
    if section == "service":
        return _locate_service(mesh, subject, field)
    if section == "access":
        return _locate_access(mesh, change)
    if section in ("alert", "slo"):
        items = mesh.alerts if section == "alert" else mesh.slos
        item = next((x for x in items if x.name == subject), None)
        if item is None:
            return None
        key = "when" if field in ("signal", "op", "threshold") else field
        return (*item.path, *_dotted(key))
    return None


def _locate_listener(lst: Listener, field: str) -> PathKey:
    """A tcp listener's ``to SERVICE[/SUBSET]`` or ``sni PATTERN`` entry, else the field."""
    head, _, rest = field.partition(" ")
    if head == "to":
        dest = next((d for d in lst.to if target_name(d.service, d.subset) == rest), None)
        return lst.path if dest is None else dest.path
    if head == "sni":
        entry = next((e for e in lst.sni if e.pattern == rest), None)
        return lst.path if entry is None else entry.path
    return (*lst.path, *_dotted(field))


def _locate_route(mesh: Mesh, name: str, field: str) -> PathKey | None:
    route = next((r for r in mesh.routes if r.name == name), None)
    if route is None:
        return None
    if route.synthetic:
        service = mesh.services.get(name)
        return None if service is None else service.path
    if field.startswith("to "):
        target, _, rest = field[3:].partition(" ")
        dest = next((d for d in route.to if target_name(d.service, d.subset) == target), None)
        if dest is None:
            return route.path
        if rest and dest.call is not None and rest != "weight":
            written = _origin_path(dest.call.origin(rest))
            if written is not None:
                return written
        return (*dest.path, *_dotted(rest))
    return (*route.path, *_dotted(field))


def _locate_service(mesh: Mesh, name: str, field: str) -> PathKey | None:
    service = mesh.services.get(name)
    if service is None:
        return None
    head, _, rest = field.partition(" ")
    if head == "endpoint":
        address = rest.partition(" ")[0]
        endpoints = getattr(service.discovery, "endpoints", ())
        found = next((e for e in endpoints if e.address == address), None)
        return service.path if found is None else found.path
    if head == "subset":
        subset = service.subset(rest.partition(" ")[0])
        return service.path if subset is None else subset.path
    dotted = field
    while dotted:  # the layer that wrote this merged policy value, or a mapping holding it
        written = _origin_path(service.origin(dotted))
        if written is not None:
            return written
        dotted = dotted.rpartition(".")[0]
    return (*service.path, *_dotted(field))  # as written on the service (or its nearest part)


def _locate_access(mesh: Mesh, change: Change) -> PathKey | None:
    """The first rule of this caller (or ``*``) on this service, on the side that has it."""
    caller, _, service = change.subject.partition(" -> ")
    for rule in mesh.access:
        if rule.source == caller and rule.service == service:
            return rule.path
    return None
