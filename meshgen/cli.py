"""Command line: dispatch, exit codes and printing (the parsers are :mod:`meshgen.cli_args`);
the work happens elsewhere.

Exit codes: 0 no errors (warnings allowed unless ``--strict``), 1 the spec is invalid,
2 usage error or internal error. Heavy modules are imported inside the commands so that
``meshgen --version`` starts fast. No exception ever escapes as a bare traceback.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeAlias

from meshgen import __version__

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from meshgen.diagnostics import Diagnostic, SourceLines
    from meshgen.pipeline import Result
    from meshgen.runtime.tables import Tables

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_CHANGES = 0, 1, 2, 3
REVIEW_COMMANDS = ("plan", "explain", "graph")
_kept: list[object] | None = None
"""What validate and build compiled, left for the process exit when :func:`entry` runs them."""


Options: TypeAlias = "argparse.Namespace | SimpleNamespace"
"""A parsed command line: argparse's, or :func:`_plain_validate`'s without argparse."""


class UsageError(Exception):
    """A command line that argparse (:mod:`meshgen.cli_args`) or a command rejects: exit 2."""


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
    except UsageError as exc:
        from meshgen.cli_args import parser

        print(parser().format_usage().rstrip(), file=sys.stderr)
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
            raise UsageError("meshgen run: error: usage: meshgen run DIST [runtime options]")
        return _run_dist(Path(args[1]), args[2:])
    if args and args[0] == "certs":
        from meshgen.certs import main as certs_main

        return certs_main(args[1:])
    ns = _plain_validate(args)
    if ns is None:
        from meshgen.cli_args import COMMANDS, parser

        ns = parser(args[0] if args and args[0] in COMMANDS else None).parse_args(args)
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


def _plain_validate(args: list[str]) -> Options | None:
    """``validate SPEC...`` without options as argparse parses it, without importing argparse
    or building its parser (~5 ms of a ~120 ms validate); None for any other command line
    (tests/unit/test_cli.py holds the two to each other)."""
    specs = args[1:]
    if args[:1] != ["validate"] or not specs or any(spec.startswith("-") for spec in specs):
        return None
    return SimpleNamespace(
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
        raise UsageError(f"meshgen run: error: {dist} is not a built DIST (no __main__.py)")
    saved = sys.argv[:]
    sys.argv = [str(dist), *options]
    try:
        runpy.run_path(str(dist), run_name="__main__")
    finally:
        sys.argv = saved
    return EXIT_OK


def _compile_command(ns: Options) -> int:
    if ns.command == "validate":
        return _validate(ns)
    return _compile_one(ns, ns.spec)


def _validate(ns: Options) -> int:
    """Every SPEC checked on its own; JSON and GitHub output is one document for all of them."""
    if [str(p) for p in (*ns.spec, *ns.overlay)].count("-") > 1:
        raise UsageError("meshgen validate: error: standard input (-) can be read only once")
    collected: list[Diagnostic] | None = None if ns.format == "text" else []
    worst = EXIT_OK
    for spec in ns.spec:
        worst = max(worst, _compile_one(ns, spec, collected))
    if collected is not None:
        print_diagnostics(collected, ns.format)
    return worst


def _compile_one(ns: Options, spec: Path, collected: list[Diagnostic] | None = None) -> int:
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


def _build(ns: Options, files: dict[str, str], tables: Tables | None = None) -> int:
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


def _say(ns: Options, message: str) -> None:
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
