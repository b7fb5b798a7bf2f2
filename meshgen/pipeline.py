"""The compiler as ordered stages: source -> schema -> lower -> checks -> plan -> targets.

Each stage is a function ``input -> (output, diagnostics)``. Later stages still run on the
parts that passed: a schema or lowering error inside one service, route, listener, access
rule, alert or SLO leaves that part out (:mod:`meshgen.units`) and the rest is lowered and
checked, so one run reports every error it can (a typo in one service, an unknown service in a
route and bad weights in another). Only an error outside those parts (``version``, ``mesh``,
``defaults``, a file that does not parse) stops the pipeline after its stage. Diagnostics of
all stages come back together, sorted by position; nothing is rendered after an error. Only
``source`` reads the file system; writing is ``emit``'s job.

Other commands use :func:`load_mesh` to get the typed, checked model of a spec with overlays.

``only`` (``--target``) selects what is rendered, all by default; a rendered target that
cannot express a field lists it in its GAPS.txt and, only when named, warns (W701).

The cyclic garbage collector is paused for a whole build (:func:`collector_paused`): a build
allocates millions of acyclic objects (node tree, model, tables, text) that all live until it
ends, so every collection would rescan them and free nothing; at 10,000 services the
collections cost more than the build itself. Objects still referenced when the pause ends are
scanned once by the next collection; what the build dropped was freed by reference counting.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from meshgen import __version__, checks, lower, source
from meshgen.diagnostics import Diagnostic, has_errors
from meshgen.model import Mesh
from meshgen.schema import check as check_schema
from meshgen.source import Document, Input
from meshgen.units import unit_of, units_of

if TYPE_CHECKING:
    from meshgen.runtime.tables import Tables
    from meshgen.targets import RenderContext, Target

ASIDE = "runtime"
"""The target a large build renders in a forked child (:mod:`meshgen.forked`), with HAProxy's
GAPS.txt (:data:`ASIDE_GAPS`), while this process renders the others and Envoy's GAPS.txt. At
10,000 services the child's share takes ~2.6 s of CPU (the runtime target ~1.9 s, the rest is
the fork's copied pages and passing the files back), this process's ~2.4 s (HAProxy ~0.75 s,
Envoy ~1.3 s and its GAPS.txt ~0.3 s); the child's files are small to pass back (Envoy's would
be 130 MB)."""
ASIDE_GAPS = ("haproxy",)
"""The targets whose GAPS.txt the child writes beside :data:`ASIDE`'s files."""
ASIDE_FROM = 1000
"""Fewest clusters that make a build fork: below, rendering takes well under a second."""


class Result:
    """What a compile produced. ``files`` is None when a stage reported errors.

    ``sources`` maps each input's name (as in diagnostics) to its text, for quoting lines
    even when an input did not parse. (A plain class: a validate imports nothing that makes
    dataclasses.)
    """

    def __init__(
        self, diagnostics: list[Diagnostic], document: Document | None, sources: dict[str, str]
    ) -> None:
        self.diagnostics = diagnostics
        self.document = document
        self.tables: Tables | None = None
        self.files: dict[str, str] | None = None
        self.sources = sources
        self.mesh: Mesh | None = None

    @property
    def ok(self) -> bool:
        return self.files is not None


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; nested uses are free."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_mesh(path: Path, overlays: Sequence[Path] = ()) -> tuple[Mesh | None, list[Diagnostic]]:
    """The checked model of the mesh.yaml at ``path`` with ``overlays`` merged on top, in order.

    Returns every diagnostic of every stage that could run (sorted by position) and the mesh,
    or None when any of them is an error. Each policy value's :class:`~meshgen.model.Origin`
    names its layer (built-in, defaults, service, route), its path and ``file``: the input
    that wrote it (mesh.yaml's name as given, or an overlay's). ``mesh.source`` is the loaded
    :class:`~meshgen.source.Document`: ``mesh.source.span(path)`` gives the FILE:LINE:COL of
    any model path in the file that wrote it, and ``mesh.source.sources()`` the inputs for
    ``diagnostics.render_text``. ``-`` (once) reads standard input.
    """
    with collector_paused():
        result = _analyse(*_read(path, overlays))
        return (None if has_errors(result.diagnostics) else result.mesh), result.diagnostics


Targets = Sequence[str] | None
"""Target names to render (``--target``); None: all, and no gap is a warning."""


def compile_spec(
    path: Path, version: str = __version__, overlays: Sequence[Path] = (), only: Targets = None
) -> Result:
    """Compile the mesh.yaml at ``path`` with ``overlays`` into DIST files (nothing is written)."""
    with collector_paused():
        return _compile(_analyse(*_read(path, overlays)), version, only)


def check_spec(path: Path, overlays: Sequence[Path] = (), only: Targets = None) -> Result:
    """What ``meshgen validate`` reports of the mesh.yaml at ``path`` with ``overlays``: every
    stage's diagnostics up to the checks, and the gap warnings of the targets named in ``only``.

    No file is rendered (``files`` stays None), so a validate imports no renderer (nor jinja2,
    nor the runtime's table types unless ``only`` asks for gaps) and starts fast; renderers
    report nothing a user can fix, only meshgen's own bugs, which ``build`` still catches by
    verifying what it writes.
    """
    with collector_paused():
        result = _analyse(*_read(path, overlays))
        doc, mesh = result.document, result.mesh
        if only is not None and doc and mesh and not has_errors(result.diagnostics):
            from meshgen import targets
            from meshgen.plan import to_tables
            from meshgen.targets import gaps as target_gaps

            tables = to_tables(mesh)
            for target in targets.selected(only):
                if target.gaps is not None:
                    found = target_gaps.located(target.gaps(tables), mesh, doc)
                    _add(result, target_gaps.warnings(target.name, target.engine, found))
        return result


def compile_text(text: str, name: str, version: str = __version__, only: Targets = None) -> Result:
    """Compile mesh.yaml text; relative file paths resolve against the working directory."""
    with collector_paused():
        return _compile(_analyse(*_loaded([Input(Path(name), name, text)], [])), version, only)


def _read(
    path: Path, overlays: Sequence[Path]
) -> tuple[Document | None, list[Diagnostic], dict[str, str]]:
    inputs: list[Input] = []
    diagnostics: list[Diagnostic] = []
    for item in (path, *overlays):
        got, problems = source.read(item)
        diagnostics += problems
        if got is not None:
            inputs.append(got)
    return _loaded(inputs, diagnostics)


def _loaded(
    inputs: list[Input], diagnostics: list[Diagnostic]
) -> tuple[Document | None, list[Diagnostic], dict[str, str]]:
    sources = {item.name: item.text for item in inputs}
    if diagnostics:
        return None, diagnostics, sources
    doc, problems = source.load_inputs(inputs[0], inputs[1:], partial=True)
    return doc, problems, sources


def _analyse(doc: Document | None, diags: list[Diagnostic], sources: dict[str, str]) -> Result:
    """source's result -> schema -> lower -> checks, each on the parts the one before passed."""
    result = Result(sorted(diags, key=_key), doc, sources)
    if doc is None:
        return result
    broken = units_of(doc.unit_at(d.span) or () for d in diags if d.severity == "error")
    if broken is None:
        return result  # an error outside every part: nothing after `source` can judge
    invalid = [(p, d) for p, d in check_schema(doc) if unit_of(p) not in broken]
    _add(result, [d for _, d in invalid])
    skip = units_of(p for p, _ in invalid)
    if skip is None:
        return result
    skip |= broken
    mesh, lowered = lower.lower(doc, skip)
    _add(result, lowered)
    if mesh is None:
        return result
    _add(result, checks.run_all(mesh, doc))
    result.mesh = mesh
    return result


def _compile(result: Result, version: str, only: Targets) -> Result:
    """plan -> targets (with their gaps) -> MANIFEST, when no stage reported an error."""
    from meshgen import targets  # imported only where files are made: validate makes none
    from meshgen.emit import MANIFEST, manifest_text
    from meshgen.forked import Beside
    from meshgen.plan import to_tables  # and the runtime's table types with it

    doc, mesh = result.document, result.mesh
    if doc is None or mesh is None or has_errors(result.diagnostics):
        return result
    tables = to_tables(mesh)
    result.tables = tables
    inputs = _inputs(doc)
    ctx = targets.make_context(" + ".join(name for name, _ in inputs), version)
    chosen = targets.selected(only)
    large = len(tables.clusters) >= ASIDE_FROM
    aside = [t for t in chosen if large and t.name == ASIDE]
    gapped = [t for t in chosen if t.gaps is not None]
    gapped_aside = [t for t in gapped if large and t.name in ASIDE_GAPS]
    warn = only is not None
    work = partial(_work, aside, gapped_aside, tables, ctx, mesh, doc, warn)
    with Beside(work, fork=bool(aside)) as beside:
        files, warned = _work(
            [t for t in chosen if t not in aside],
            [t for t in gapped if t not in gapped_aside],
            tables,
            ctx,
            mesh,
            doc,
            warn,
        )
        more, warned_aside = beside.result()
    warned += warned_aside
    files.update(more)
    _add(result, warned)
    files[MANIFEST] = manifest_text(files, inputs[0][0], inputs[0][1], version, inputs[1:])
    result.files = dict(sorted(files.items()))
    return result


def _render(chosen: Sequence[Target], tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """The files of every renderer of the ``chosen`` targets."""
    files: dict[str, str] = {}
    for target in chosen:
        for render in target.renders:
            files.update(render(tables, ctx))
    return files


def _work(
    renders: Sequence[Target],
    gapped: Sequence[Target],
    tables: Tables,
    ctx: RenderContext,
    mesh: Mesh,
    doc: Document,
    warn: bool,
) -> tuple[dict[str, str], list[Diagnostic]]:
    """The files of the ``renders`` targets and the GAPS.txt of the ``gapped`` ones, with
    their W701 warnings when ``warn`` (the targets were named)."""
    from meshgen.targets import gaps as target_gaps

    files = _render(renders, tables, ctx)
    warned: list[Diagnostic] = []
    for target in gapped:
        assert target.gaps is not None
        found = target_gaps.located(target.gaps(tables), mesh, doc)
        files[f"{target.name}/GAPS.txt"] = target_gaps.gaps_text(ctx.header, target.engine, found)
        if warn:
            warned += target_gaps.warnings(target.name, target.engine, found)
    return files, warned


def _inputs(doc: Document) -> list[tuple[str, bytes]]:
    """(path relative to mesh.yaml's folder, bytes) of mesh.yaml and each overlay."""
    out = [(doc.path.name, doc.text.encode("utf-8"))]
    for layer in doc.overlays:
        if str(layer.path) == "-":
            where = "-"
        else:
            where = Path(os.path.relpath(layer.path, doc.folder)).as_posix()
        out.append((where, layer.text.encode("utf-8")))
    return out


def _key(d: Diagnostic) -> tuple[str, int, int, str, str]:
    return d.sort_key


def _add(result: Result, diags: list[Diagnostic]) -> None:
    """Add a stage's diagnostics, keeping them sorted by position."""
    if diags:
        result.diagnostics = sorted([*result.diagnostics, *diags], key=_key)
