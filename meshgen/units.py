"""Which part of mesh.yaml an error spoils, so the stages after it can check the rest.

A *unit* is a part of the spec that the later stages can leave out on its own: one service,
route, listener, access rule, alert or SLO. An error inside a unit (a schema violation, an
address that does not parse) leaves that unit out of the model and the rest is lowered and
checked as usual, so one run reports a typo in one service, an unknown service in a route and
bad weights in another (as ``istioctl analyze`` and CUE report every error). An error outside
any unit (``version``, ``mesh``, ``defaults``, ``admin``, the shape of a whole section) spoils
everything after it: the pipeline stops there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meshgen.model import PathKey, Skipped

_LISTS = ("routes", "listeners", "access")
_MONITORING = ("alerts", "slos")


def unit_of(path: PathKey) -> PathKey | None:
    """The unit that holds ``path``; None when the path is outside every unit."""
    if len(path) >= 2:
        head, second = path[0], path[1]
        if head == "services" and isinstance(second, str):
            return path[:2]
        if head in _LISTS and isinstance(second, int):
            return path[:2]
        if head == "monitoring" and second in _MONITORING and len(path) >= 3:
            return path[:3] if isinstance(path[2], int) else None
    return None


def units_of(paths: Iterable[PathKey]) -> frozenset[PathKey] | None:
    """The units of ``paths``; None if any path lies outside every unit."""
    units = set()
    for path in paths:
        unit = unit_of(path)
        if unit is None:
            return None
        units.add(unit)
    return frozenset(units)


def skipped(data: Any, units: frozenset[PathKey]) -> Skipped:
    """What leaving ``units`` out of ``data`` hides from the checks."""
    services = frozenset(str(u[1]) for u in units if u[0] == "services")
    route_names: set[str] = set()
    nameless = False
    raw_routes = data.get("routes") if isinstance(data, dict) else None
    for unit in units:
        index = unit[1]
        if unit[0] != "routes" or not isinstance(index, int):
            continue
        raw = raw_routes[index] if isinstance(raw_routes, list) else None
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            route_names.add(name)
        else:
            nameless = True
    return Skipped(units, services, frozenset(route_names), nameless)
