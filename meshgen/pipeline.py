"""The compiler as ordered stages: source -> schema -> lower -> checks -> plan -> targets.

Each stage returns diagnostics; the pipeline stops after the first stage that reported an
error and returns *all* of that stage's diagnostics (warnings of earlier stages included),
sorted by position. Only ``source`` reads the file system; writing is ``emit``'s job.

The cyclic garbage collector is paused for a whole build (:func:`collector_paused`): a build
allocates millions of acyclic objects (node tree, model, tables, text) that all live until it
ends, so every collection would rescan them and free nothing; at 10,000 services the
collections cost more than the build itself. Objects still referenced when the pause ends are
scanned once by the next collection; what the build dropped was freed by reference counting.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from meshgen import __version__, checks, lower, source, targets
from meshgen.diagnostics import Diagnostic, has_errors
from meshgen.emit import MANIFEST, manifest_text
from meshgen.plan import to_tables
from meshgen.runtime.tables import Tables
from meshgen.schema import validate as validate_schema
from meshgen.source import Document


@dataclass
class Result:
    """What a compile produced. ``files`` is None when a stage reported errors."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    document: Document | None = None
    tables: Tables | None = None
    files: dict[str, str] | None = None

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


def compile_spec(path: Path, version: str = __version__) -> Result:
    """Compile the mesh.yaml at ``path`` into DIST files (nothing is written)."""
    with collector_paused():
        doc, diags = source.load(path)
        return compile_document(doc, diags, version)


def compile_text(text: str, name: str, version: str = __version__) -> Result:
    """Compile mesh.yaml text; relative file paths resolve against the working directory."""
    with collector_paused():
        doc, diags = source.loads(text, name)
        return compile_document(doc, diags, version)


def compile_document(
    doc: Document | None, diags: list[Diagnostic], version: str = __version__
) -> Result:
    """Run every stage after ``source`` on an already loaded document."""
    with collector_paused():
        return _compile(doc, diags, version)


def _compile(doc: Document | None, diags: list[Diagnostic], version: str) -> Result:
    result = Result(diagnostics=sorted(diags, key=_key), document=doc)
    if doc is None or has_errors(diags):
        return result
    if _stage(result, validate_schema(doc)):
        return result
    mesh, lowered = lower.lower(doc)
    if _stage(result, lowered) or mesh is None:
        return result
    if _stage(result, checks.run_all(mesh, doc)):
        return result
    tables = to_tables(mesh)
    result.tables = tables
    ctx = targets.make_context(doc.path.name, version)
    files: dict[str, str] = {}
    for _name, render in targets.registered():
        files.update(render(tables, ctx))
    files[MANIFEST] = manifest_text(files, doc.path.name, doc.text.encode("utf-8"), version)
    result.files = dict(sorted(files.items()))
    return result


def _key(d: Diagnostic) -> tuple[str, int, int, str, str]:
    return d.sort_key


def _stage(result: Result, diags: list[Diagnostic]) -> bool:
    """Add a stage's diagnostics; True when it reported an error (stop here)."""
    result.diagnostics = sorted([*result.diagnostics, *diags], key=_key)
    return has_errors(diags)
