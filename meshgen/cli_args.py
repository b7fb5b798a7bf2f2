"""The command line's parsers: argparse, imported only when a command line needs one.

A plain ``meshgen validate SPEC...`` (no option) needs none (``meshgen.cli``'s fast path):
importing argparse and gettext costs a validate ~3.5 ms of ~120 ms (issue #12).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from meshgen import __version__
from meshgen.cli import UsageError
from meshgen.target_names import NAMES as TARGET_NAMES

if TYPE_CHECKING:
    from collections.abc import Callable


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter at argparse's width, found without importing shutil, which
    argparse imports to ask for it (~4 ms of a validate: a formatter is made for every argument
    added, to check its metavar)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size().columns`` gives it: ``$COLUMNS``
    when it is a positive number, else standard output's terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # no standard output, or not a terminal
        return 80


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` returns the code."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(formatter_class=_Formatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command's, or only ``command``'s (with the same
    arguments) when the command line names one; the eight others cost a validate ~15 ms."""
    p = _Parser(prog="meshgen", description="Compile mesh.yaml into a runnable service mesh.")
    p.add_argument("--version", action="version", version=f"meshgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, add in COMMANDS.items():
        if command in (None, name):
            add(sub)
    return p


Subcommands: TypeAlias = "argparse._SubParsersAction[_Parser]"


def _spec_command(
    sub: Subcommands, name: str, help_text: str, many: bool = False
) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=help_text, description=help_text)
    if many:
        cmd.add_argument(
            "spec", type=Path, nargs="+", help="mesh.yaml files to check (- for stdin)"
        )
    else:
        cmd.add_argument("spec", type=Path, help="the mesh.yaml to compile (- for stdin)")
    cmd.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default="text",
        help="how to print diagnostics (default: text)",
    )
    cmd.add_argument("--strict", action="store_true", help="treat warnings as errors")
    _overlay_option(cmd)
    cmd.add_argument(
        "--target",
        action="append",
        choices=TARGET_NAMES,
        metavar="NAME",
        help="build only this target (repeatable; default: all): "
        + ", ".join(TARGET_NAMES)
        + "; what a named target cannot express is a warning (W701)",
    )
    return cmd


def _add_build(sub: Subcommands) -> None:
    build = _spec_command(sub, "build", "check SPEC and write DIST (replaced atomically)")
    build.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIST", help="folder to write"
    )
    build.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming the files when DIST is out of date",
    )


def _add_validate(sub: Subcommands) -> None:
    _spec_command(
        sub,
        "validate",
        "check each SPEC (overlays apply to each); write nothing; exit 1 when any is invalid",
        many=True,
    )


def _add_init(sub: Subcommands) -> None:
    init = sub.add_parser("init", help="write a commented starter mesh.yaml")
    init.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=Path("mesh.yaml"),
        help="file (or folder, for FOLDER/mesh.yaml) to write (default: mesh.yaml)",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")


def _add_schema(sub: Subcommands) -> None:
    sub.add_parser("schema", help="print the JSON Schema of mesh.yaml (for editors and CI)")


def _add_run(sub: Subcommands) -> None:
    sub.add_parser(
        "run", help="run a built DIST on the embedded runtime: run DIST [options]", add_help=False
    )


def _add_certs(sub: Subcommands) -> None:
    sub.add_parser(
        "certs", help="certificate helpers for development: certs --help", add_help=False
    )


def _overlay_option(
    cmd: argparse.ArgumentParser, flag: str = "--overlay", on: str = "SPEC"
) -> None:
    cmd.add_argument(
        flag,
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help=f"a partial mesh.yaml merged on top of {on} (repeatable, applied in order; "
        "mappings merge key by key, lists replace, null removes a key)",
    )


def _diagnostics_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--diagnostics",
        choices=("text", "json", "github"),
        default="text",
        help="how to print the problems of an invalid input, on stderr (default: text)",
    )


def _add_plan(sub: Subcommands) -> None:
    text = (
        "the semantic difference from OLD to NEW (each a mesh.yaml or a built DIST): routes, "
        "endpoints, policies, access verdicts, alerts, SLOs, listeners, TLS; exit 0 no "
        "difference, 3 differences, 1 an invalid input, 2 usage or internal error"
    )
    plan = sub.add_parser("plan", help=text, description=text)
    for side in ("old", "new"):
        plan.add_argument(
            side, type=Path, help=f"the {side.upper()} mesh.yaml (- for stdin) or DIST folder"
        )
    for side in ("old", "new"):
        _overlay_option(plan, f"--{side}-overlay", side.upper())
    plan.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="text, json, or markdown for a pull-request comment (default: text)",
    )
    _diagnostics_option(plan)


def _add_explain(sub: Subcommands) -> None:
    text = (
        "how the runtime treats a request (listener, each route tried and why it did or did "
        "not match, split, endpoints, every policy value with its origin, access verdict) or "
        "what a service's effective settings are and where each was written"
    )
    explain = sub.add_parser("explain", help=text, description=text)
    explain.add_argument("spec", type=Path, help="the mesh.yaml (- for stdin)")
    what = explain.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--request",
        metavar="'METHOD URL'",
        help="a request, e.g. 'GET http://reviews/path' (or '/path' with -H 'Host: ...'); on a "
        "tcp listener, a connection: its host stands for the TLS server name an sni listener "
        "routes on",
    )
    what.add_argument("--service", metavar="NAME", help="a service's effective configuration")
    explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable)",
    )
    explain.add_argument(
        "--from",
        dest="caller",
        metavar="SERVICE",
        help="the caller's identity (its client certificate's spiffe://MESH/SERVICE)",
    )
    explain.add_argument(
        "--listener",
        metavar="NAME",
        help="the listener the request arrives on (default: the first whose routes match; "
        "with --from, one that checks client certificates first; else the first http "
        "listener; a tcp listener only when there is no http one)",
    )
    _overlay_option(explain)
    explain.add_argument("--format", choices=("text", "json"), default="text", help="default: text")
    _diagnostics_option(explain)


def _add_graph(sub: Subcommands) -> None:
    text = (
        "draw the mesh: listeners, routes, services and subsets with weights, mirrors, "
        "failover backups and access edges (svg needs Graphviz's dot)"
    )
    graph = sub.add_parser("graph", help=text, description=text)
    graph.add_argument("spec", type=Path, help="the mesh.yaml (- for stdin) or a built DIST")
    graph.add_argument(
        "--format",
        choices=("mermaid", "dot", "svg"),
        default="mermaid",
        help="mermaid (for Markdown), dot (Graphviz source) or svg (default: mermaid)",
    )
    graph.add_argument(
        "--listener",
        action="append",
        default=[],
        metavar="NAME",
        help="draw only this listener, the routes (or tcp services) it serves, the services "
        "they reach with their failover backups, and the access rules into those services "
        "(repeatable; default: the whole mesh)",
    )
    _overlay_option(graph)
    _diagnostics_option(graph)


COMMANDS: dict[str, Callable[[Subcommands], None]] = {
    "build": _add_build,
    "validate": _add_validate,
    "init": _add_init,
    "plan": _add_plan,
    "explain": _add_explain,
    "graph": _add_graph,
    "schema": _add_schema,
    "run": _add_run,
    "certs": _add_certs,
}
"""Each command's parser, in the order ``meshgen --help`` lists them."""
