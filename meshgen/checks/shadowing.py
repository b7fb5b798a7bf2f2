"""W301: a route no request can reach because an earlier route matches all its requests.

Routes are tried in file order and the first match wins. Route A shadows a later route B when
every request B matches also matches A, on every listener that serves B. The test is
deliberately conservative (a missed warning is fine, a false one is not):
- hosts: A has none, or B has some and all of them are A's;
- paths: A's prefix covers B's prefix or exact path under both string-prefix and
  segment-prefix readings; an exact or regex path covers only the same path, or an exact
  path the regex fully matches;
- methods: A has none, or B has some and all of them are A's;
- headers: each of A's header conditions is implied by one of B's on the same header.
Candidates are looked up by host, so the check is near-linear in the number of routes.
"""

from __future__ import annotations

import re
from collections import defaultdict

from meshgen.checks.context import Context
from meshgen.model import HeaderMatch, Match


def check(ctx: Context) -> None:
    mesh = ctx.mesh
    routes = mesh.routes
    if len(routes) < 2 or routes[0].synthetic or mesh.skipped.any("listeners"):
        return  # (with a listener left out, which routes it serves is not known)
    served_by: dict[str, set[int]] = defaultdict(set)
    for number, listener in enumerate(mesh.listeners):
        for name in mesh.listener_routes(listener):
            served_by[name].add(number)
    # candidates by host (None: routes matching any host), then by first path segment
    # (None: prefix '/' and regex paths, which may cover any path)
    index: dict[str | None, dict[str | None, list[int]]] = defaultdict(lambda: defaultdict(list))
    for position, route in enumerate(routes):
        later = route.match
        listeners = served_by.get(route.name, set())
        segment = _segment(later)
        candidates: list[int] = []
        for host in {None, later.hosts[0] if later.hosts else None}:
            group = index.get(host, {})
            candidates += group.get(None, [])
            if segment is not None:
                candidates += group.get(segment, [])
        for earlier_index in sorted(candidates):
            earlier = routes[earlier_index]
            if (
                earlier.name != route.name
                and listeners
                and listeners <= served_by.get(earlier.name, set())
                and covers(earlier.match, later)
            ):
                ctx.warning(
                    "W301",
                    f"route '{route.name}' is never used: route '{earlier.name}' above it "
                    "matches every request it matches",
                    (*route.path, "name"),
                    f"routes are tried in file order; move '{route.name}' above "
                    f"'{earlier.name}' or narrow '{earlier.name}'",
                    related=[((*earlier.path, "name"), "this route matches first")],
                )
                break
        for host in later.hosts or (None,):
            index[host][segment].append(position)


def _segment(match: Match) -> str | None:
    """First path segment of a prefix/exact path; None for '/' prefixes and regexes."""
    if match.path_kind == "regex" or (match.path_kind == "prefix" and match.path in ("", "/")):
        return None
    return match.path.split("/")[1] if match.path.startswith("/") else match.path


def covers(a: Match, b: Match) -> bool:
    """True only when every request matching ``b`` certainly matches ``a``."""
    if a.hosts and not (b.hosts and set(b.hosts) <= set(a.hosts)):
        return False
    if a.methods and not (b.methods and set(b.methods) <= set(a.methods)):
        return False
    if not all(any(_implies(g, h) for g in b.headers) for h in a.headers):
        return False
    return _path_covers(a, b)


def _prefix_covers(prefix: str, path: str) -> bool:
    if not path.startswith(prefix):
        return False
    return prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"


def _path_covers(a: Match, b: Match) -> bool:
    if a.path_kind == "prefix":
        if a.path in ("", "/"):
            return True
        return b.path_kind in ("prefix", "exact") and _prefix_covers(a.path, b.path)
    if a.path_kind == b.path_kind and a.path == b.path:
        return True
    return a.path_kind == "regex" and b.path_kind == "exact" and _full_match(a.path, b.path)


def _full_match(pattern: str, text: str) -> bool:
    try:
        return re.fullmatch(pattern, text) is not None
    except re.error:
        return False  # reported as E305


def _implies(g: HeaderMatch, h: HeaderMatch) -> bool:
    """Whether header condition ``g`` (of the later route) guarantees ``h`` (of the earlier)."""
    if g.name != h.name:
        return False
    if g == h or h.kind == "present":
        return True
    if h.kind == "prefix":
        return g.kind in ("exact", "prefix") and g.value.startswith(h.value)
    return h.kind == "regex" and g.kind == "exact" and _full_match(h.value, g.value)
