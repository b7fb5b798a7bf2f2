"""Helpers for the model/lower/checks/plan tests: mesh.yaml text -> Mesh / diagnostics."""

from __future__ import annotations

import textwrap
from pathlib import Path

from meshgen import checks, source
from meshgen.diagnostics import Diagnostic
from meshgen.lower import lower
from meshgen.model import Mesh
from meshgen.source import Document

HEAD = "version: 1\nmesh: {name: shop, domain: mesh.test}\n"
ONE_SERVICE = """
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081}
"""


def document(text: str, folder: Path | None = None) -> Document:
    """Load dedented ``text`` (prefixed with HEAD unless it has a top-level version)."""
    body = textwrap.dedent(text)
    if "\nversion:" not in "\n" + body:
        body = HEAD + body
    path = (folder or Path(".")) / "mesh.yaml"
    doc, diags = source.loads(body, "mesh.yaml", path)
    assert doc is not None, diags
    return doc


def mesh_of(text: str, folder: Path | None = None) -> Mesh:
    mesh, diags = lower(document(text, folder))
    assert mesh is not None, diags
    return mesh


def diagnose(text: str, folder: Path | None = None) -> list[Diagnostic]:
    """Lowering diagnostics, or, when lowering succeeded, every check's."""
    doc = document(text, folder)
    mesh, diags = lower(doc)
    if mesh is None:
        return diags
    return diags + checks.run_all(mesh, doc)


def codes(text: str, folder: Path | None = None) -> list[str]:
    return [d.code for d in diagnose(text, folder)]
