"""Find the files meshgen ships: schemas/, templates/ and the runtime package.

In a wheel they live in ``meshgen/_data/`` (see pyproject.toml); in a source checkout they
are the top-level ``schemas/`` and ``templates/`` folders next to the package. Paths come from
this module's own location rather than ``importlib.resources`` (which imports zipfile and
tempfile, ~10 ms of a ``meshgen validate``): meshgen is always installed as plain files, and
the build copies the runtime's files anyway.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).parent
"""The installed ``meshgen`` package folder."""


def data_dir(name: str) -> Path:
    """Return the folder ``name`` ("schemas" or "templates") of this installation."""
    installed = PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / name


def runtime_dir() -> Path:
    """The runtime package that ``meshgen build`` copies to ``DIST/meshgen_runtime``."""
    return PACKAGE / "runtime"


def schema_path() -> Path:
    """The JSON Schema of mesh.yaml that this installation validates with."""
    return data_dir("schemas") / "mesh.schema.json"


def schema_text() -> str:
    """The schema's text, as shipped (``meshgen schema`` prints it)."""
    return schema_path().read_text(encoding="utf-8")


def schema_id() -> str:
    """The schema's ``$id``: the URL editors load it from, valid wherever a mesh.yaml is copied."""
    import json

    schema_url: str = json.loads(schema_text())["$id"]
    return schema_url
