"""docs/reference.md and the schema teach the same mesh.yaml, and each field teaches enough.

The reference's field tables are rendered from the schema (``python docs/render_reference.py``);
these tests fail when the doc is stale, when a schema field has no row, when a field's text
lacks what a person needs in an editor (what it does, its default, an example), or when the
default it names differs from the schema's ``default``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from meshgen.alertexpr import OPERATORS, SIGNALS
from meshgen.resources import schema_path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reference.md"
FIX = "run `python docs/render_reference.py` after editing schemas/mesh.schema.json"
SCHEMA: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))


def _renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_reference", ROOT / "docs" / "render_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = _renderer()


def _properties(node: Any, pointer: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(pointer, property schema, parent object schema) of every property anywhere."""
    if not isinstance(node, dict):
        return
    for name, prop in node.get("properties", {}).items():
        yield f"{pointer}/properties/{name}", prop, node
        yield from _properties(prop, f"{pointer}/properties/{name}")
    for key in ("items", "additionalProperties"):
        yield from _properties(node.get(key), f"{pointer}/{key}")
    for name, sub in node.get("$defs", {}).items():
        yield from _properties(sub, f"{pointer}/$defs/{name}")


PROPERTIES = list(_properties(SCHEMA, "#"))


def _yaml(value: Any) -> str:
    """A default as a person writes it in mesh.yaml (flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def test_the_field_tables_are_rendered_from_the_current_schema() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert RENDER.render(doc, SCHEMA) == doc, f"docs/reference.md is stale: {FIX}"


def test_every_object_shape_has_a_table() -> None:
    """The root and every $defs object with fields have a fields block (a new one needs a
    section in the reference: add `<!-- fields #/$defs/NAME -->` / `<!-- end fields -->`)."""
    doc = DOC.read_text(encoding="utf-8")
    blocks = {m.group("pointer") for m in RENDER.FIELDS.finditer(doc)}
    wanted = {"#"} | {f"#/$defs/{n}" for n, d in SCHEMA["$defs"].items() if "properties" in d}
    assert wanted <= blocks, f"no table for {sorted(wanted - blocks)} in docs/reference.md"
    assert "<!-- scalars -->" in doc


@pytest.mark.parametrize("pointer", [p for p, _, _ in PROPERTIES], ids=str)
def test_every_schema_property_has_a_row(pointer: str) -> None:
    """Found independently of the renderer: the block of the nearest enclosing table holds a
    row whose first cell is the property's dotted path."""
    doc = DOC.read_text(encoding="utf-8")
    blocks = {m.group("pointer"): m.group(0) for m in RENDER.FIELDS.finditer(doc)}
    owner = max((b for b in blocks if pointer.startswith(b + "/")), key=len)
    rest = pointer[len(owner) :].split("/")[1:]
    parts, i = [], 0
    while i < len(rest):
        kind = rest[i]
        if kind == "properties":
            parts.append(rest[i + 1])
            i += 2
        else:
            parts[-1] += "[]" if kind == "items" else ".NAME"
            i += 1
    path = ".".join(parts)
    assert f"| `{path}` |" in blocks[owner], f"no row `{path}` in the {owner} table: {FIX}"


@pytest.mark.parametrize(
    ("pointer", "prop", "parent"), PROPERTIES, ids=[p for p, _, _ in PROPERTIES]
)
def test_each_field_says_what_it_does_its_default_and_an_example(
    pointer: str, prop: dict[str, Any], parent: dict[str, Any]
) -> None:
    text = prop.get("description", "")
    assert len(text.split(". ")[0]) > 10, f"{pointer}: say what the field does"
    assert "Example: " in text, f"{pointer}: add 'Example: ...' to its description"
    name = pointer.rsplit("/", 1)[1]
    if "default" in prop:
        want = f"Default: {_yaml(prop['default'])}."
        assert want in text, f"{pointer}: description must say {want!r} (the schema's default)"
    elif name in parent.get("required", ()):
        assert "Required" in text, f"{pointer}: a required field says 'Required'"
    else:
        assert "Default: " in text or "Required" in text, (
            f"{pointer}: say what happens when it is left out ('Default: ...')"
        )


def test_shapes_have_examples() -> None:
    for name, node in SCHEMA["$defs"].items():
        assert "Example: " in node.get("description", ""), f"$defs/{name}: add an example"


def test_when_describes_the_alert_syntax() -> None:
    """Hovering `when:` teaches the whole condition language: every signal and operator."""
    alert = SCHEMA["properties"]["monitoring"]["properties"]["alerts"]["items"]
    text = alert["properties"]["when"]["description"]
    assert "SIGNAL OP VALUE" in text
    for signal in SIGNALS:
        assert signal in text, f"`when` does not mention {signal}"
    words = set(re.split(r"[\s,.;:()]+", text))
    for op in OPERATORS:
        assert op in words, f"`when` does not mention {op}"


def test_internal_links_resolve() -> None:
    doc = DOC.read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([^"]+)"></a>', doc))
    for heading in re.findall(r"^#+ (.+)$", doc, re.MULTILINE):
        ids.add(re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-"))
    missing = sorted({t for t in re.findall(r"\]\(#([^)]+)\)", doc)} - ids)
    assert missing == [], f"links to missing anchors: {missing}"


def test_relative_links_point_at_files() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([a-z][^):#]*\.md)", doc):
        assert (DOC.parent / target).is_file(), f"docs/reference.md links to missing {target}"
