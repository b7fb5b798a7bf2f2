"""The review commands' glue: read the inputs, run the analysis, print, choose the exit code.

Exit codes (as every meshgen command): 0 nothing to report, 1 an invalid input (its
diagnostics on stderr), 2 usage or internal error; ``plan`` adds 3, "there are differences".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from meshgen.cli import EXIT_CHANGES, EXIT_INVALID, EXIT_OK, EXIT_USAGE, print_diagnostics
from meshgen.diagnostics import has_errors

if TYPE_CHECKING:
    from meshgen.model import Mesh


def _usage(command: str, message: str) -> int:
    print(f"meshgen {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def plan(ns: argparse.Namespace) -> int:
    """``meshgen plan OLD NEW``: print the changes; 0 none, 3 some, 1 an invalid side."""
    from meshgen.review.diff import Side, SideError, load_side
    from meshgen.review.diff import plan as plan_changes
    from meshgen.review.plan_render import RENDERERS

    paths: list[Path] = [ns.old, ns.new]
    overlays: list[list[Path]] = [ns.old_overlay, ns.new_overlay]
    if [str(p) for p in (*paths, *overlays[0], *overlays[1])].count("-") > 1:
        return _usage("plan", "standard input (-) can be read only once")
    for path, layers, which in zip(paths, overlays, ("old", "new"), strict=True):
        if layers and path.is_dir():
            return _usage("plan", f"--{which}-overlay applies to a mesh.yaml; {path} is a DIST")
    sides: list[Side] = []
    invalid = False
    for path, layers in zip(paths, overlays, strict=True):
        try:
            side, diagnostics = load_side(path, layers)
        except SideError as exc:
            print(f"meshgen plan: error: {exc}", file=sys.stderr)
            invalid = True
            continue
        if side is None or has_errors(diagnostics):
            print_diagnostics(diagnostics, ns.diagnostics, stream=sys.stderr)
            invalid = True
            continue
        sides.append(side)
    if invalid:
        return EXIT_INVALID
    old, new = sides
    planned = plan_changes(old, new)
    sys.stdout.write(RENDERERS[ns.format](planned, old.label, new.label))
    return EXIT_CHANGES if planned else EXIT_OK


def _load(command: str, ns: argparse.Namespace) -> tuple[Mesh | None, int]:
    """The checked model of ``ns.spec`` with ``ns.overlay``; None and the exit code if not."""
    from meshgen.pipeline import load_mesh

    if [str(p) for p in (ns.spec, *ns.overlay)].count("-") > 1:
        return None, _usage(command, "standard input (-) can be read only once")
    mesh, diagnostics = load_mesh(ns.spec, ns.overlay)
    if mesh is None:
        print_diagnostics(diagnostics, ns.diagnostics, stream=sys.stderr)
        return None, EXIT_INVALID
    return mesh, EXIT_OK


def explain(ns: argparse.Namespace) -> int:
    """``meshgen explain SPEC --request ... | --service NAME``."""
    from meshgen.plan import to_tables
    from meshgen.review.effective import explain_service
    from meshgen.review.explain import RequestError, explain_request, parse_request
    from meshgen.review.explain_render import (
        render_json,
        render_service_text,
        render_trace_text,
    )

    mesh, code = _load("explain", ns)
    if mesh is None:
        return code
    tables = to_tables(mesh)
    if ns.service is not None:
        if ns.service not in mesh.services:
            known = ", ".join(sorted(mesh.services))
            return _usage("explain", f"--service {ns.service!r}: no such service ({known})")
        report = explain_service(mesh, tables, ns.service)
        text = render_json(report) if ns.format == "json" else render_service_text(report)
    else:
        try:
            request = parse_request(ns.request, ns.header, ns.caller)
            trace = explain_request(mesh, tables, request, ns.listener)
        except RequestError as exc:
            return _usage("explain", str(exc))
        text = render_json(trace) if ns.format == "json" else render_trace_text(trace)
    sys.stdout.write(text)
    return EXIT_OK


def graph(ns: argparse.Namespace) -> int:
    """``meshgen graph SPEC --format mermaid|dot|svg``."""
    from meshgen.review.diff import SideError, load_side
    from meshgen.review.graph import (
        GraphvizMissing,
        build_graph,
        only_listeners,
        to_dot,
        to_mermaid,
        to_svg,
    )

    if [str(p) for p in (ns.spec, *ns.overlay)].count("-") > 1:
        return _usage("graph", "standard input (-) can be read only once")
    if ns.overlay and ns.spec.is_dir():
        return _usage("graph", f"--overlay applies to a mesh.yaml; {ns.spec} is a DIST")
    try:
        side, diagnostics = load_side(ns.spec, ns.overlay)
    except SideError as exc:
        print(f"meshgen graph: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if side is None:
        print_diagnostics(diagnostics, ns.diagnostics, stream=sys.stderr)
        return EXIT_INVALID
    drawn = build_graph(side.tables)
    if ns.listener:
        known = [x.name for x in side.tables.listeners]
        unknown = [name for name in ns.listener if name not in known]
        if unknown:
            names = ", ".join(known)
            return _usage("graph", f"--listener {unknown[0]!r}: no such listener ({names})")
        drawn = only_listeners(drawn, ns.listener)
    if ns.format == "mermaid":
        sys.stdout.write(to_mermaid(drawn))
        return EXIT_OK
    try:
        sys.stdout.write(to_svg(to_dot(drawn)) if ns.format == "svg" else to_dot(drawn))
    except GraphvizMissing as exc:
        return _usage("graph", str(exc))
    return EXIT_OK
