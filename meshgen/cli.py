"""Command line: argument parsing, exit codes and printing; the work happens elsewhere.

Exit codes: 0 no errors (warnings allowed unless ``--strict``), 1 the spec is invalid,
2 usage error or internal error. Heavy modules are imported inside the commands so that
``meshgen --version`` starts fast. No exception ever escapes as a bare traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeAlias

from meshgen import __version__
from meshgen.target_names import NAMES as TARGET_NAMES

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from meshgen.diagnostics import Diagnostic, SourceLines
    from meshgen.pipeline import Result
    from meshgen.runtime.tables import Tables

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_CHANGES = 0, 1, 2, 3
REVIEW_COMMANDS = ("plan", "explain", "graph")
_kept: list[object] | None = None
"""What validate and build compiled, left for the process exit when :func:`entry` runs them."""


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
        raise _UsageError(f"{self.prog}: error: {message}")


class _UsageError(Exception):
    pass


def _parser(command: str | None = None) -> argparse.ArgumentParser:
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


def entry() -> NoReturn:
    """The ``meshgen`` command (console script, ``python -m meshgen``): :func:`main`, and after
    a validate or build the process ends without freeing what it compiled.

    A build of 10,000 services holds millions of objects (document, model, tables, text);
    freeing them one by one took 0.5 s, which the kernel does at once by taking the heap back.
    Standard output and error are flushed first; meshgen registers no exit handlers, and other
    commands (``run`` among them) exit normally.
    """
    global _kept
    _kept = []
    code = main()
    if not _kept:
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: as the interpreter would report a failed flush
        code = code or 120
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``meshgen`` command; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        return _dispatch(args)
    except _UsageError as exc:
        print(_parser().format_usage().rstrip(), file=sys.stderr)
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("meshgen: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse --help / --version, or a delegated main
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except Exception as exc:
        _internal_error(exc)
        return EXIT_USAGE


def _internal_error(exc: BaseException) -> None:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    print(f"meshgen: internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
    print(
        f"meshgen {__version__} hit a bug; please report it with the mesh.yaml that caused it.",
        file=sys.stderr,
    )


def _dispatch(args: list[str]) -> int:
    if args and args[0] == "run":
        if args[1:2] in (["-h"], ["--help"]):
            from meshgen.runtime.app.main import arg_parser

            arg_parser("meshgen run", with_dist=True).print_help()
            return EXIT_OK
        if len(args) < 2 or args[1].startswith("-"):
            raise _UsageError("meshgen run: error: usage: meshgen run DIST [runtime options]")
        return _run_dist(Path(args[1]), args[2:])
    if args and args[0] == "certs":
        from meshgen.certs import main as certs_main

        return certs_main(args[1:])
    ns = _plain_validate(args)
    if ns is None:
        ns = _parser(args[0] if args and args[0] in COMMANDS else None).parse_args(args)
    if ns.command == "schema":
        from meshgen.resources import schema_text

        sys.stdout.write(schema_text())
        return EXIT_OK
    if ns.command == "init":
        from meshgen.init import write_starter

        return write_starter(ns.path, force=ns.force)
    if ns.command in REVIEW_COMMANDS:
        from meshgen.review import commands

        return int(getattr(commands, ns.command)(ns))
    from meshgen.pipeline import collector_paused

    with collector_paused():  # the build's objects are freed before the collector runs again
        return _compile_command(ns)


def _plain_validate(args: list[str]) -> argparse.Namespace | None:
    """``validate SPEC...`` without options as argparse parses it, without building the parser
    (with gettext's and locale's work, ~3 ms of a ~120 ms validate); None for any other
    command line (tests/unit/test_cli.py holds the two to each other)."""
    specs = args[1:]
    if args[:1] != ["validate"] or not specs or any(spec.startswith("-") for spec in specs):
        return None
    return argparse.Namespace(
        command="validate",
        spec=[Path(spec) for spec in specs],
        format="text",
        strict=False,
        overlay=[],
        target=None,
    )


def _run_dist(dist: Path, options: list[str]) -> int:
    """``meshgen run DIST``: execute DIST/__main__.py exactly as ``python DIST`` would.

    DIST's tables construct ``meshgen_runtime.tables`` objects, so the runtime must be DIST's own
    copy (``DIST/meshgen_runtime``), never this installation's ``meshgen.runtime``: runpy puts
    DIST first on ``sys.path`` and runs its ``__main__`` module, which raises SystemExit(code).
    """
    import runpy

    if not (dist / "__main__.py").is_file():
        raise _UsageError(f"meshgen run: error: {dist} is not a built DIST (no __main__.py)")
    saved = sys.argv[:]
    sys.argv = [str(dist), *options]
    try:
        runpy.run_path(str(dist), run_name="__main__")
    finally:
        sys.argv = saved
    return EXIT_OK


def _compile_command(ns: argparse.Namespace) -> int:
    if ns.command == "validate":
        return _validate(ns)
    return _compile_one(ns, ns.spec)


def _validate(ns: argparse.Namespace) -> int:
    """Every SPEC checked on its own; JSON and GitHub output is one document for all of them."""
    if [str(p) for p in (*ns.spec, *ns.overlay)].count("-") > 1:
        raise _UsageError("meshgen validate: error: standard input (-) can be read only once")
    collected: list[Diagnostic] | None = None if ns.format == "text" else []
    worst = EXIT_OK
    for spec in ns.spec:
        worst = max(worst, _compile_one(ns, spec, collected))
    if collected is not None:
        print_diagnostics(collected, ns.format)
    return worst


def _compile_one(
    ns: argparse.Namespace, spec: Path, collected: list[Diagnostic] | None = None
) -> int:
    """Compile ``spec``: validate or build it. Diagnostics are printed, or added to
    ``collected`` when the caller prints them all at once."""
    from meshgen import pipeline
    from meshgen.source import STDIN

    validate = ns.command == "validate"
    compile_ = pipeline.check_spec if validate else pipeline.compile_spec
    result = compile_(spec, overlays=ns.overlay, only=ns.target)
    if _kept is not None:
        _kept.append(result)
        gc.freeze()  # the collector would scan all of it after every build step (1+ s at 10k)
    if collected is None:
        _print_diagnostics(result, ns.format)
    else:
        collected += result.diagnostics
    errors = sum(d.severity == "error" for d in result.diagnostics)
    warnings = len(result.diagnostics) - errors
    done = result.mesh if validate else result.files
    if done is None or errors or (ns.strict and warnings):
        if ns.strict and warnings and not errors and ns.format == "text":
            print(f"meshgen: {warnings} warning(s) and --strict: failing", file=sys.stderr)
        return EXIT_INVALID
    if validate:
        _say(ns, f"{STDIN if str(spec) == '-' else spec}: ok")
        return EXIT_OK
    files = result.files
    assert files is not None
    tables = result.tables if ns.check else None  # for the summary
    del result  # in-process callers free the document and tables before writing (not entry)
    return _build(ns, files, tables)


def _build(ns: argparse.Namespace, files: dict[str, str], tables: Tables | None = None) -> int:
    from meshgen.emit import EmitError, VerifyError, compare, emit

    dist: Path = ns.output
    if ns.check:
        problems = compare(files, dist)
        if problems:
            print(
                f"meshgen: {dist} is out of date with {ns.spec}; rebuild with "
                f"`meshgen build {ns.spec} -o {dist}`:",
                file=sys.stderr,
            )
            for line in problems:
                print(f"  {line}", file=sys.stderr)
            if tables is not None:
                _stale_changes(dist, tables)
            return EXIT_INVALID
        _say(ns, f"{dist}: up to date")
        return EXIT_OK
    try:
        emit(files, dist)
    except EmitError as exc:
        print(f"meshgen: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VerifyError as exc:
        _internal_error(exc)
        return EXIT_USAGE
    _say(ns, f"{ns.spec} -> {dist}: {len(files)} files")
    return EXIT_OK


def _stale_changes(dist: Path, tables: Tables) -> None:
    """What rebuilding a stale DIST would change in its tables, as ``meshgen plan`` says it
    (nothing when DIST's tables cannot be read, or only other files differ)."""
    from meshgen.review.dist_tables import read_dist_tables
    from meshgen.runtime.app.loader import TablesError
    from meshgen.runtime.app.table_changes import describe, table_changes

    try:
        changes = table_changes(read_dist_tables(dist), tables)
    except TablesError:
        return
    if changes:
        print(f"what a rebuild changes (meshgen plan {dist} SPEC says where):", file=sys.stderr)
        for line in describe(changes):
            print(f"  {line}", file=sys.stderr)


def _say(ns: argparse.Namespace, message: str) -> None:
    if ns.format == "text":
        print(message, file=sys.stderr)


def _print_diagnostics(result: Result, fmt: str) -> None:
    sources = result.document.sources() if result.document else result.sources
    print_diagnostics(result.diagnostics, fmt, sources)


def print_diagnostics(
    diags: list[Diagnostic],
    fmt: str,
    sources: Mapping[str, SourceLines | str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Diagnostics as ``fmt`` (text, json, github): text on stderr, the others on ``stream``
    (default stdout, where build and validate print them; plan keeps stdout for the plan)."""
    from meshgen import diagnostics

    if fmt == "json":
        print(diagnostics.render_json(diags), file=stream or sys.stdout)
    elif fmt == "github":
        if diags:
            print(diagnostics.render_github(diags), file=stream or sys.stdout)
    elif diags:
        text = diagnostics.render_text(diags, sources)
        print(text, file=sys.stderr, end="" if text.endswith("\n") else "\n")
