"""``meshgen init``: write a commented starter mesh.yaml that validates and builds."""

from __future__ import annotations

import sys
from pathlib import Path

from meshgen import __version__


def starter_text(file_name: str = "mesh.yaml") -> str:
    """The starter spec, rendered from templates/init/mesh.yaml.j2."""
    import jinja2

    from meshgen.resources import data_dir, schema_id

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    return env.get_template("init/mesh.yaml.j2").render(
        version=__version__,
        file_name=file_name,
        schema_url=schema_id(),
    )


def write_starter(path: Path, *, force: bool = False) -> int:
    """Write the starter to ``path``; 2 if it exists and no ``force``.

    A path that is a folder, or does not end in .yaml/.yml, is a folder that gets ``mesh.yaml``.
    """
    if path.is_dir() or path.suffix not in (".yaml", ".yml"):
        path = path / "mesh.yaml"
    if path.exists() and not force:
        print(f"meshgen: error: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 2
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(starter_text(path.name), encoding="utf-8")
    except OSError as exc:
        print(f"meshgen: error: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {path}; next: meshgen build {path} -o dist", file=sys.stderr)
    return 0
