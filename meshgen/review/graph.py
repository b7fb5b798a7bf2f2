"""``meshgen graph``: the mesh as a picture (Mermaid, Graphviz DOT, or SVG through ``dot``).

Theory of operation: the runtime tables (of a mesh.yaml, or of a DIST) become one neutral
:class:`Graph` (nodes grouped per service, edges in table order), which each syntax then
writes. Nodes: listeners, routes, callers named by access rules, and per service one node for
the whole service plus one per subset. Edges: a listener to the routes it serves (numbered in
match order; a tcp listener straight to its services, by weight or server name), a route to
each destination (its weight) and its mirror (dashed), a service to its failover backup
(dotted), a caller to each service its rules open (the methods and paths). Every label is
escaped for its syntax: names are safe, but paths and hosts come from the spec.
:func:`only_listeners` cuts the graph down to what some listeners serve (``--listener``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from meshgen.runtime.tables import StaticDiscovery, Tables

DOT_TIMEOUT_S: Final = 60.0
MAX_LABEL: Final = 60  # longer labels are cut (a regex path can be long)


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str  # listener | route | caller | service | subset


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    style: str = "solid"  # solid | dashed (mirror) | dotted (backup) | access


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    groups: dict[str, list[Node]] = field(default_factory=dict)  # service -> its nodes
    edges: list[Edge] = field(default_factory=list)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _service_id(name: str, subset: str | None = None) -> str:
    return f"service:{name}" if subset is None else f"subset:{name}/{subset}"


def _match_label(tables: Tables, route_name: str) -> str:
    route = next(r for r in tables.routes if r.name == route_name)
    match = route.match
    parts = [" ".join(match.hosts)] if match.hosts else []
    kind = {"prefix": "", "exact": "= ", "regex": "~ "}[match.path_kind]
    parts.append(f"{kind}{match.path}")
    if match.methods:
        parts.append(",".join(match.methods))
    parts += [f"{h.name}: {h.kind} {h.value}".rstrip() for h in match.headers]
    return _cut(" ".join(parts))


def build_graph(tables: Tables) -> Graph:
    """The neutral graph of ``tables`` (see the module docstring)."""
    graph = Graph()
    for lst in tables.listeners:
        tls = "" if lst.tls is None else f" mTLS {lst.tls.client_certificates}"
        address = f"[{lst.host}]:{lst.port}" if ":" in lst.host else f"{lst.host}:{lst.port}"
        graph.nodes.append(Node(f"listener:{lst.name}", f"{lst.name}\n{address}{tls}", "listener"))
    for route in tables.routes:
        label = f"{route.name}\n{_match_label(tables, route.name)}"
        if route.redirect is not None:
            label += f"\nredirect {route.redirect.status}"
        graph.nodes.append(Node(f"route:{route.name}", label, "route"))
    for cluster in tables.clusters:
        if isinstance(cluster.discovery, StaticDiscovery):
            count = len(cluster.discovery.endpoints)
            size = f"{count} endpoint{'' if count == 1 else 's'}"
        else:
            size = f"DNS {cluster.discovery.record_type}"
        zones = cluster.failover.zones
        extra = f"\nzones {' > '.join(zones)}" if zones else ""
        nodes = [Node(_service_id(cluster.name), f"{cluster.name}\n{size}{extra}", "service")]
        nodes += [
            Node(_service_id(cluster.name, s.name), s.name, "subset") for s in cluster.subsets
        ]
        graph.groups[cluster.name] = nodes
    callers = sorted({rule.source for rule in tables.access})
    for caller in callers:
        label = "any caller with a certificate" if caller == "*" else caller
        graph.nodes.append(Node(f"caller:{caller}", label, "caller"))
    for lst in tables.listeners:
        for i, name in enumerate(lst.routes, start=1):
            graph.edges.append(Edge(f"listener:{lst.name}", f"route:{name}", str(i)))
        for t in lst.to:  # a tcp listener: straight to its services
            graph.edges.append(
                Edge(f"listener:{lst.name}", _service_id(t.service, t.subset), f"tcp {t.weight}%")
            )
        for r in lst.sni:
            graph.edges.append(Edge(f"listener:{lst.name}", _service_id(r.service), r.pattern))
    for route in tables.routes:
        for target in route.to:
            graph.edges.append(
                Edge(
                    f"route:{route.name}",
                    _service_id(target.service, target.subset),
                    f"{target.weight}%",
                )
            )
        if route.mirror is not None:
            copy = route.mirror
            graph.edges.append(
                Edge(
                    f"route:{route.name}",
                    _service_id(copy.service, copy.subset),
                    f"mirror {copy.percent:g}%",
                    "dashed",
                )
            )
    for cluster in tables.clusters:
        if cluster.failover.backup is not None:
            graph.edges.append(
                Edge(
                    _service_id(cluster.name),
                    _service_id(cluster.failover.backup),
                    "backup",
                    "dotted",
                )
            )
    for rule in tables.access:
        what = " ".join(filter(None, (",".join(rule.methods), ",".join(rule.paths)))) or "all"
        graph.edges.append(
            Edge(f"caller:{rule.source}", _service_id(rule.service), _cut(what), "access")
        )
    return graph


def only_listeners(graph: Graph, names: Iterable[str]) -> Graph:
    """The part of ``graph`` the listeners ``names`` serve (``meshgen graph --listener``): each
    listener, what it leads to (routes, their destinations and mirrors, a tcp listener's
    services), every failover backup of those, and the access edges into the services kept.
    A service is kept with its whole group (its subsets), as the full graph draws it."""
    group_of = {n.id: service for service, nodes in graph.groups.items() for n in nodes}
    onward: dict[str, list[str]] = {}
    for e in graph.edges:
        if e.style != "access":
            onward.setdefault(e.source, []).append(e.target)
    keep = {f"listener:{name}" for name in names}
    pending = list(keep)
    while pending:
        node = pending.pop()
        nexts = onward.get(node, [])
        if node in group_of:  # a subset reached: its service's backups apply too
            nexts = [*nexts, _service_id(group_of[node])]
        for target in nexts:
            if target not in keep:
                keep.add(target)
                pending.append(target)
    groups = {s: nodes for s, nodes in graph.groups.items() if _service_id(s) in keep}
    drawn = keep | {n.id for nodes in groups.values() for n in nodes}
    edges = [
        e for e in graph.edges if e.target in drawn and (e.source in drawn or e.style == "access")
    ]
    callers = {e.source for e in edges if e.style == "access"}
    nodes = [n for n in graph.nodes if n.id in drawn or n.id in callers]
    return Graph(nodes, groups, edges)


# ---- Mermaid --------------------------------------------------------------------------------

_MERMAID_SHAPES: Final = {
    "listener": ('["', '"]'),
    "route": ('(["', '"])'),
    "caller": ('(("', '"))'),
    "service": ('[["', '"]]'),
    "subset": ('["', '"]'),
}
_MERMAID_ARROWS: Final = {"solid": "-->", "dashed": "-.->", "dotted": "-.->", "access": "-.->"}


def _mermaid_id(node_id: str) -> str:
    """Names are ``[a-z][a-z0-9-]*``, so this is one-to-one: ``route:a-b`` -> ``route_a__b``."""
    return node_id.replace("-", "__").replace(":", "_").replace("/", "_S_").replace("*", "ANY")


def _mermaid_text(text: str) -> str:
    escaped = "".join(
        f"#{ord(c)};" if c in '"<>#&`|[](){}' or (not c.isprintable() and c != "\n") else c
        for c in text
    )
    return escaped.replace("\n", "<br/>")


def _mermaid_node(node: Node) -> str:
    left, right = _MERMAID_SHAPES[node.kind]
    return f"{_mermaid_id(node.id)}{left}{_mermaid_text(node.label)}{right}"


def to_mermaid(graph: Graph) -> str:
    lines = ["flowchart LR"]
    lines += [f"  {_mermaid_node(n)}" for n in graph.nodes]
    for service, nodes in graph.groups.items():
        lines.append(f'  subgraph {_mermaid_id("group:" + service)}["service {service}"]')
        lines += [f"    {_mermaid_node(n)}" for n in nodes]
        lines.append("  end")
    for e in graph.edges:
        arrow = _MERMAID_ARROWS[e.style]
        label = f"|{_mermaid_text(e.label)}|" if e.label else ""
        lines.append(f"  {_mermaid_id(e.source)} {arrow}{label} {_mermaid_id(e.target)}")
    return "\n".join(lines) + "\n"


# ---- Graphviz DOT ---------------------------------------------------------------------------

_DOT_SHAPES: Final = {
    "listener": 'shape=box, style="rounded,filled", fillcolor="#dbeafe"',
    "route": 'shape=box, style="filled", fillcolor="#fef3c7"',
    "caller": 'shape=ellipse, style="dashed"',
    "service": 'shape=box3d, style="filled", fillcolor="#dcfce7"',
    "subset": 'shape=box, style="rounded"',
}


_DOT_EDGES: Final = {
    "solid": "",
    "dashed": ", style=dashed",
    "dotted": ", style=dotted",
    "access": ', style=dashed, color="#7c3aed", fontcolor="#7c3aed"',
}


def _dot_text(text: str) -> str:
    """A DOT string literal; ``\\n`` in ``text`` becomes a line break in the label."""
    body = text.replace("\\", "\\\\").replace('"', '\\"')
    body = "".join(c if c.isprintable() or c == "\n" else f"\\\\x{ord(c):02x}" for c in body)
    return '"' + body.replace("\n", "\\n") + '"'


def _dot_nodes(nodes: Iterable[Node], indent: str) -> list[str]:
    return [
        f"{indent}{_dot_text(n.id)} [label={_dot_text(n.label)}, {_DOT_SHAPES[n.kind]}];"
        for n in nodes
    ]


def to_dot(graph: Graph) -> str:
    lines = [
        "digraph mesh {",
        '  rankdir=LR; fontname="Helvetica"; nodesep=0.3;',
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    lines += _dot_nodes(graph.nodes, "  ")
    for i, (service, nodes) in enumerate(graph.groups.items()):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label={_dot_text("service " + service)}; style="dashed";')
        lines += _dot_nodes(nodes, "    ")
        lines.append("  }")
    for e in graph.edges:
        style = _DOT_EDGES[e.style]
        lines.append(
            f"  {_dot_text(e.source)} -> {_dot_text(e.target)} [label={_dot_text(e.label)}{style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizMissing(Exception):
    """``dot`` is not installed; the message says how to get it."""


def to_svg(dot_source: str) -> str:
    """Render DOT with Graphviz's ``dot -Tsvg`` (its version comment removed, so the output
    depends on the layout only)."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing(
            "--format svg needs Graphviz's `dot` on PATH: apt-get install graphviz (Debian, "
            "Ubuntu), brew install graphviz (macOS); or print the source with --format dot"
        )
    done = subprocess.run(
        [dot, "-Tsvg"],
        input=dot_source,
        capture_output=True,
        text=True,
        timeout=DOT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dot failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return re.sub(r"<!-- Generated by graphviz.*?-->\n", "", done.stdout, flags=re.S)
