"""What changed between two table generations, in the words a reviewer uses.

Theory of operation: each subject (the mesh, a listener, a route, a service, an alert, an SLO)
is rendered as a :mod:`.table_view` on both sides and the views are compared key by key, so a
change names a mesh.yaml field and an element (``route reviews-split: to reviews/v3 weight 10 ->
50``, ``service payments: endpoint 10.0.0.7:80 removed``). Routes are first-match, so their
order is a change of its own. Access is compared by *verdict*, not by rule text: for every
caller, service, method and path region the rules of either side name, both sides' compiled
:class:`~.access.AccessPolicy` decide, and each flip is a change (``access: frontend ->
payments POST /charge now denied``). Rewording rules without changing what they allow is no
change at all.

A caller that no rule of a service names gets exactly what ``*`` gets there, so it is reported
as ``*``, once. A region is probed by one representative: a method no rule names stands for
"the other methods", and a path prefix ``p`` stands for the paths under ``p`` that are not
under a longer prefix also named (so ``/charge`` says what ``/charge/x`` gets unless
``/charge/x`` is a prefix of its own). Verdicts are the same for every member of a region, so
the probes are exhaustive.

Objects that compare equal are never rendered, so a reload of a large mesh that changed one
route costs one route's views. Standard library only (the runtime logs a reload's changes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..policy.access import ANY, AccessPolicy, path_under
from ..tables import AccessRule, Tables
from .table_view import (
    View,
    alert_view,
    compact,
    field_name,
    listener_view,
    mesh_view,
    route_view,
    service_view,
    slo_view,
)

OTHER_METHODS: Final = ""  # stands for every method no rule names (no real method is empty)
SECTIONS: Final = ("mesh", "listener", "routes", "route", "service", "access", "alert", "slo")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference. ``old``/``new`` None: absent on that side; ``field`` "": the subject.

    ``section`` is one of :data:`SECTIONS`; ``subject`` names the listener, route, service,
    alert or SLO (for ``access``: ``caller -> service``; for ``mesh``/``routes``: "").
    """

    section: str
    subject: str
    field: str
    old: str | None
    new: str | None
    element: bool = False  # ``field`` ends in an element's key (``endpoint 10.0.0.7:80``)

    @property
    def action(self) -> str:
        return "added" if self.old is None else "removed" if self.new is None else "changed"

    def text(self) -> str:
        """One line: ``route r: to a/v3 weight 10 -> 50``, ``access: a -> b GET / now denied``."""
        if self.section == "access":
            return f"access: {self.subject} {self.field} now {self.new}"
        head = f"{self.section} {self.subject}" if self.subject else self.section
        what = f"{self.field} " if self.field else ""
        if self.old is None:
            return f"{head}: {what}added" + (f" ({self.new})" if self.new else "")
        if self.new is None:  # a subject or an element is named well enough
            shown = self.field and not self.element
            return f"{head}: {what}removed" + (f" (was {self.old})" if shown else "")
        return f"{head}: {what}{self.old} -> {self.new}"


Difference = tuple[tuple[str, ...], str | None, str | None]


def diff_views(old: View, new: View, path: tuple[str, ...] = ()) -> list[Difference]:
    """``(key path, old text, new text)`` for every leaf or sub-mapping that differs."""
    out: list[Difference] = []
    for key in merged_order(old, new):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_views(a, b, (*path, key))
        else:
            out.append(((*path, key), _text(a), _text(b)))
    return out


def _change(section: str, subject: str, diff: Difference) -> Change:
    path, old, new = diff
    return Change(section, subject, field_name(path), old, new, " " in path[-1])


def merged_order(old: Iterable[str], new: Iterable[str]) -> list[str]:
    """``new``'s order, with each key only ``old`` has placed after its predecessor there."""
    order = list(new)
    previous: str | None = None
    for key in old:
        if key not in order:
            order.insert(order.index(previous) + 1 if previous is not None else 0, key)
        previous = key
    return order


def _text(value: str | View | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return compact(value)


def _subjects(
    section: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    view_old: Callable[[str], View],
    view_new: Callable[[str], View],
) -> list[Change]:
    """Added, removed and changed subjects of one section (keyed by name). ``old``/``new``
    hold what a subject's view is made of: only subjects whose parts differ are rendered."""
    out: list[Change] = []
    for name in merged_order(old, new):
        if name not in new:
            out.append(Change(section, name, "", "", None))
        elif name not in old:
            out.append(Change(section, name, "", None, ""))
        elif old[name] != new[name]:
            out += [_change(section, name, d) for d in diff_views(view_old(name), view_new(name))]
    return out


def _listed(
    section: str, old: Iterable[Any], new: Iterable[Any], view: Callable[[Any], View]
) -> list[Change]:
    """:func:`_subjects` of a list of named table objects whose view needs only the object."""
    before, after = _named(old), _named(new)
    return _subjects(section, before, after, lambda n: view(before[n]), lambda n: view(after[n]))


def _service_parts(tables: Tables) -> dict[str, tuple[Any, ...]]:
    """Everything that makes up a service's view, for a cheap equality test."""
    return {
        c.name: (
            c,
            tables.health_checks.get(c.name),
            tables.outlier_detection.get(c.name),
            tables.client_tls.get(c.name),
        )
        for c in tables.clusters
    }


def _route_parts(tables: Tables) -> dict[str, tuple[Any, ...]]:
    """A route with the services it sends to (its view shows policy relative to theirs)."""
    clusters = {c.name: c for c in tables.clusters}
    return {r.name: (r, *(clusters.get(t.service) for t in r.to)) for r in tables.routes}


def _routes(old: Tables, new: Tables) -> list[Change]:
    """Route changes; routes are tried in order, so a reordering of the routes both sides
    have is a change, and an added route says which route it is tried before."""
    out: list[Change] = []
    before = [r.name for r in old.routes]
    after = [r.name for r in new.routes]
    kept_before = [n for n in before if n in after]
    kept_after = [n for n in after if n in before]
    if kept_before != kept_after:
        out.append(Change("routes", "", "order", ", ".join(kept_before), ", ".join(kept_after)))
    place = {n: f"tried before {after[i + 1]}" for i, n in enumerate(after[:-1])}
    a, b = _named(old.routes), _named(new.routes)
    changes = _subjects(
        "route",
        _route_parts(old),
        _route_parts(new),
        lambda n: route_view(old, a[n]),
        lambda n: route_view(new, b[n]),
    )
    for change in changes:
        if change.action == "added" and not change.field:
            change = Change("route", change.subject, "", None, place.get(change.subject, ""))
        out.append(change)
    return out


def _named(items: Iterable[Any]) -> dict[str, Any]:
    return {item.name: item for item in items}


def table_changes(old: Tables, new: Tables) -> list[Change]:
    """Every difference between two generations, by section (see :data:`SECTIONS`)."""
    out: list[Change] = []
    if old.mesh != new.mesh:
        diffs = diff_views(mesh_view(old.mesh), mesh_view(new.mesh))
        out += [_change("mesh", "", d) for d in diffs]
    out += _listed("listener", old.listeners, new.listeners, listener_view)
    out += _routes(old, new)
    a, b = _named(old.clusters), _named(new.clusters)
    out += _subjects(
        "service",
        _service_parts(old),
        _service_parts(new),
        lambda n: service_view(old, a[n]),
        lambda n: service_view(new, b[n]),
    )
    if old.access != new.access:
        out += access_changes(old.access, new.access)
    out += _listed("alert", old.alerts, new.alerts, alert_view)
    out += _listed("slo", old.slos, new.slos, slo_view)
    return out


def _children(prefix: str, prefixes: Sequence[str]) -> list[str]:
    """The named prefixes directly below ``prefix`` (not below another one below it)."""
    below = [p for p in prefixes if p != prefix and path_under(p, prefix)]
    return [p for p in below if not any(q != p and path_under(p, q) for q in below)]


def _path_label(prefix: str, prefixes: Sequence[str]) -> str:
    inner = _children(prefix, prefixes)
    if prefix == "/":
        return "paths outside " + ", ".join(inner) if inner else "any path"
    return f"{prefix} (except {', '.join(inner)})" if inner else prefix


def _method_label(flipped: Sequence[str], named: Sequence[str]) -> str:
    if OTHER_METHODS not in flipped:
        return ", ".join(flipped)
    kept = [m for m in named if m not in flipped]
    return "methods other than " + ", ".join(kept) if kept else "any method"


@dataclass(frozen=True, slots=True)
class Flip:
    """``caller`` (a name, or ``*`` for every caller no rule names) now gets ``verdict`` for
    ``methods`` (:data:`OTHER_METHODS` among them: every method no rule names) on the paths
    under ``prefix`` and not under a longer prefix of ``prefixes``."""

    caller: str
    service: str
    methods: tuple[str, ...]
    named_methods: tuple[str, ...]
    prefix: str
    prefixes: tuple[str, ...]
    verdict: str

    def change(self) -> Change:
        region = f"{_method_label(self.methods, self.named_methods)} "
        region += _path_label(self.prefix, self.prefixes)
        was = "allowed" if self.verdict == "denied" else "denied"
        return Change("access", f"{self.caller} -> {self.service}", region, was, self.verdict)


def verdict_flips(old: Sequence[AccessRule], new: Sequence[AccessRule]) -> list[Flip]:
    """Every region whose verdict differs between two rule sets (module docstring)."""
    before, after = AccessPolicy(old), AccessPolicy(new)
    rules = [*old, *new]
    out: list[Flip] = []
    for service in sorted({r.service for r in rules}):
        mine = [r for r in rules if r.service == service]
        named = tuple(sorted({m.upper() for r in mine for m in r.methods}))
        methods = (*named, OTHER_METHODS)
        prefixes = tuple(sorted({"/", *(p for r in mine for p in (r.paths or ("/",)))}))
        # A caller no rule of this service names has exactly the grants of "*": one line for it.
        callers = [*sorted({r.source for r in mine} - {ANY}), ANY]
        for caller in callers:
            for path in prefixes:
                for verdict, was, now in (("denied", before, after), ("allowed", after, before)):
                    flipped = tuple(
                        m
                        for m in methods
                        if was.allowed(caller, m, path, (service,))
                        and not now.allowed(caller, m, path, (service,))
                    )
                    if flipped:
                        out.append(Flip(caller, service, flipped, named, path, prefixes, verdict))
    return out


def access_changes(old: Sequence[AccessRule], new: Sequence[AccessRule]) -> list[Change]:
    """:func:`verdict_flips` as changes (``access: a -> payments POST /charge now denied``)."""
    return [flip.change() for flip in verdict_flips(old, new)]


def count_changes(changes: Sequence[Change]) -> str:
    """``no changes``, ``1 change``, ``3 changes``."""
    n = len(changes)
    return "no changes" if n == 0 else f"{n} change" + ("" if n == 1 else "s")


def describe(changes: Sequence[Change], limit: int = 50) -> list[str]:
    """At most ``limit`` lines for a log: the first changes, then how many more there are."""
    lines = [c.text() for c in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"... and {len(changes) - limit} more")
    return lines
