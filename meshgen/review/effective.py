"""Effective settings with their origins: what ``meshgen explain`` prints for a service or a
route's destination.

Theory of operation: values come from the runtime tables (the :mod:`~meshgen.runtime.app.table_view`
of what the runtime will use, so explain can never show a value the runtime does not have);
origins come from the model. A merged policy field (``defaults:`` < service < route) has its
origin recorded by lowering, keyed by the same dotted mesh.yaml name as the view's leaf; a
field that is not merged (``failover``, ``discovery``) comes from the service when the merged
document has it there. Anything else is the built-in default. A value an overlay wrote says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshgen.lower.merge import ATOMIC, POLICY_FIELDS
from meshgen.model import (
    BUILT_IN,
    Destination,
    Mesh,
    Origin,
    OriginKind,
    Origins,
    PathKey,
    Route,
)
from meshgen.runtime.app.table_view import call_view, leaves, route_view, service_view, target_name
from meshgen.runtime.tables import Tables, Target


@dataclass(frozen=True)
class Setting:
    """One effective value: ``name`` is its mesh.yaml field (``retries.backoff.base``);
    ``origin`` built-in, defaults, service or route; ``where`` FILE:LINE (None when built-in)."""

    name: str
    value: str
    origin: str
    where: str | None
    overlay: bool = False


def where(mesh: Mesh, path: PathKey) -> str:
    """FILE:LINE of ``path`` in the input that wrote it."""
    assert mesh.source is not None
    span = mesh.source.span(path)
    return f"{span.file}:{span.line}"


def _setting(mesh: Mesh, name: str, value: str, origin: Origin) -> Setting:
    if origin.kind == "built-in":
        return Setting(name, value, "built-in", None)
    base = mesh.source.name if mesh.source is not None else ""
    return Setting(name, value, origin.kind, where(mesh, origin.path), origin.file != base)


def _merged_origin(origins: Origins, dotted: str) -> Origin:
    """The recorded origin of ``dotted``, or of the one-of mapping that holds it."""
    found = origins.get(dotted)
    if found is not None:
        return found
    parts = dotted.split(".")
    for end in range(len(parts) - 1, 0, -1):
        outer = ".".join(parts[:end])
        if outer in ATOMIC and outer in origins:
            return origins[outer]
    return BUILT_IN


def _at(mesh: Mesh, kind: OriginKind, path: PathKey) -> Origin:
    """The origin of a value written at ``path`` (in mesh.yaml or the overlay that wrote it)."""
    assert mesh.source is not None
    return Origin(kind, path, mesh.source.file_of(path))


def _written(mesh: Mesh, path: PathKey) -> bool:
    data: Any = mesh.source.data if mesh.source is not None else None
    for step in path:
        if not isinstance(data, dict) or step not in data:
            return False
        data = data[step]
    return True


def service_settings(mesh: Mesh, tables: Tables, name: str) -> list[Setting]:
    """Every policy and discovery value of service ``name`` (endpoints and subsets excluded)."""
    service = mesh.services[name]
    cluster = next(c for c in tables.clusters if c.name == name)
    out: list[Setting] = []
    for dotted, value in leaves(service_view(tables, cluster)):
        if " " in dotted:  # an endpoint or a subset: shown on its own
            continue
        if dotted.split(".")[0] in POLICY_FIELDS:
            origin = _merged_origin(service.origins, dotted)
        else:
            path = (*service.path, *dotted.split("."))
            origin = _at(mesh, "service", path) if _written(mesh, path) else BUILT_IN
        out.append(_setting(mesh, dotted, value, origin))
    return out


def destination_settings(mesh: Mesh, dest: Destination, target: Target) -> list[Setting]:
    """The per-request policy of one destination of a route (route < service < defaults)."""
    view = call_view(target.timeout_s, target.idle_timeout_s, target.retries)
    origins = dest.call.origins if dest.call is not None else {}
    return [
        _setting(mesh, dotted, value, _merged_origin(origins, dotted))
        for dotted, value in leaves(view)
    ]


def route_settings(mesh: Mesh, tables: Tables, route: Route) -> list[Setting]:
    """What a route itself sets besides its match and destinations (fault, rewrite, ...)."""
    table = next(r for r in tables.routes if r.name == route.name)
    out: list[Setting] = []
    for dotted, value in leaves(route_view(tables, table)):
        if dotted.startswith(("match", "to ")):
            continue
        path = (*route.path, *dotted.split("."))
        out.append(_setting(mesh, dotted, value, _at(mesh, "route", path)))
    return out


@dataclass(frozen=True)
class ServiceReport:
    """``meshgen explain --service``: a service's endpoints, subsets and effective settings,
    the routes that send to it and the access rules that name it."""

    name: str
    where: str
    endpoints: tuple[tuple[str, str, str], ...]  # (address, "zone a, labels {...}", FILE:LINE)
    subsets: tuple[tuple[str, str, str], ...]  # (name, labels, FILE:LINE)
    settings: tuple[Setting, ...]
    routes: tuple[str, ...]  # "reviews-split: reviews/v1 90%, ..."
    access: tuple[str, ...]  # "FILE:LINE: from frontend ..."


def explain_service(mesh: Mesh, tables: Tables, name: str) -> ServiceReport:
    service = mesh.services[name]
    endpoints = tuple(
        (e.address, _endpoint_facts(e.weight, e.zone, e.labels), where(mesh, e.path))
        for e in getattr(service.discovery, "endpoints", ())
    )
    subsets = tuple(
        (s.name, _labels(s.labels) or "(all endpoints)", where(mesh, s.path))
        for s in service.subsets
    )
    routes = []
    for route in tables.routes:
        parts = [f"{target_name(t.service, t.subset)} {t.weight}%" for t in route.to]
        if route.mirror is not None:
            copy = route.mirror
            parts.append(f"mirror {copy.percent:g}% to {target_name(copy.service, copy.subset)}")
        named = {t.service for t in route.to} | ({route.mirror.service} if route.mirror else set())
        if name in named:
            routes.append(f"{route.name}: {', '.join(parts)}")
    access = tuple(
        f"{where(mesh, r.path)}: from {r.source} "
        f"{','.join(r.methods) or 'any method'} {','.join(r.paths) or 'any path'}"
        for r in mesh.access
        if r.service == name
    )
    return ServiceReport(
        name,
        where(mesh, service.path),
        endpoints,
        subsets,
        tuple(service_settings(mesh, tables, name)),
        tuple(routes),
        access,
    )


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in labels)


def _endpoint_facts(weight: int, zone: str | None, labels: tuple[tuple[str, str], ...]) -> str:
    facts = [f"weight {weight}"]
    if zone is not None:
        facts.append(f"zone {zone}")
    if labels:
        facts.append(f"labels {{{_labels(labels)}}}")
    return ", ".join(facts)
