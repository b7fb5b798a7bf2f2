"""Rewrite the field tables of docs/reference.md from schemas/mesh.schema.json.

The schema is where each field's text lives (editors show it on hover); the reference adds the
rules that span fields. Each table sits between a marker line naming a JSON pointer into the
schema and an end marker::

    <!-- fields #/$defs/health_check -->
    | field | type | what it does |
    ...
    <!-- end fields -->

``<!-- scalars -->`` ... ``<!-- end scalars -->`` holds the shared value shapes (the $defs
without properties). This script replaces what is between the markers with the current
schema's rows, so the reference cannot show a field, default or example the schema does not
have; ``--check`` writes nothing and exits 1 when the doc is out of date.

    python docs/render_reference.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reference.md"
SCHEMA = ROOT / "schemas" / "mesh.schema.json"
FIELDS = re.compile(
    r"^<!-- fields (?P<pointer>#\S*) -->\n.*?^<!-- end fields -->$", re.MULTILINE | re.DOTALL
)


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"^<!-- {name} -->\n.*?^<!-- end {name} -->$", re.MULTILINE | re.DOTALL)


SCALARS = _block("scalars")
METRICS = _block("metrics")
OPTIONS = _block("runtime options")

Schema = dict[str, Any]


def resolve(schema: Schema, pointer: str) -> Schema:
    """The node at a JSON pointer such as ``#/$defs/route/properties/match``."""
    node = schema
    for part in pointer.removeprefix("#").split("/")[1:]:
        node = node[part]
    return node


def is_object_def(node: Schema) -> bool:
    """A $def documented by its own table (it has fields), not as a scalar shape."""
    return "properties" in node


def anchor(def_name: str) -> str:
    """The id of the section that documents ``$defs/def_name`` (``<a id=...>`` in the doc)."""
    return def_name.replace("_", "-")


def _ref_name(node: Schema) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[1] if isinstance(ref, str) else None


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, int, float)) else str(value)


def type_of(schema: Schema, node: Schema) -> str:
    """A short type for a person: a linked shape, ``a | b``, ``list of ...``, ``1..100``."""
    ref = _ref_name(node)
    if ref is not None:
        target = schema["$defs"][ref]
        link = f"[{ref.replace('_', ' ')}](#{anchor(ref)})"
        return link if is_object_def(target) or "enum" not in target else type_of(schema, target)
    if "enum" in node:
        return " \\| ".join(f"`{_value(v)}`" for v in node["enum"] if not isinstance(v, float))
    if "const" in node:
        return f"`{_value(node['const'])}`"
    if "anyOf" in node:
        return " or ".join(type_of(schema, option) for option in node["anyOf"])
    kind = node.get("type")
    if kind == "array":
        return f"list of {type_of(schema, node.get('items', {}))}"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            keys = node.get("propertyNames", {})
            key = type_of(schema, keys) if _ref_name(keys) not in (None, "name") else "name"
            return f"mapping of {key} to {type_of(schema, values)}"
        return "mapping"
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum"))
        high = node.get("maximum")
        span = f" {low}..{high}" if low is not None and high is not None else ""
        span = span or (f" > {node['exclusiveMinimum']}" if "exclusiveMinimum" in node else "")
        span = span or (f" >= {low}" if low is not None else "")
        return f"{'whole number' if kind == 'integer' else 'number'}{span}"
    return {"string": "text", "boolean": "`true` \\| `false`"}.get(str(kind), str(kind))


def fields(
    node: Schema, pointer: str, elsewhere: frozenset[str] = frozenset(), prefix: str = ""
) -> Iterator[tuple[str, str, Schema]]:
    """(dotted path, pointer, schema) of every field, inline sub-objects flattened in order,
    except those whose pointer is in ``elsewhere`` (they have a table of their own)."""
    for name, prop in node.get("properties", {}).items():
        path, at = f"{prefix}{name}", f"{pointer}/properties/{name}"
        yield path, at, prop
        if at in elsewhere:
            continue
        if "properties" in prop:
            yield from fields(prop, at, elsewhere, f"{path}.")
        items = prop.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from fields(items, f"{at}/items", elsewhere, f"{path}[].")
        values = prop.get("additionalProperties")
        if isinstance(values, dict) and "properties" in values:
            yield from fields(values, f"{at}/additionalProperties", elsewhere, f"{path}.NAME.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def field_table(schema: Schema, pointer: str, elsewhere: frozenset[str]) -> str:
    rows = ["| field | type | what it does (default, example) |", "|---|---|---|"]
    for path, at, prop in fields(resolve(schema, pointer), pointer, elsewhere):
        kind = type_of(schema, prop)
        if at in elsewhere:
            kind += f", see [{path}](#{path})"
        rows.append(f"| `{path}` | {kind} | {_cell(prop['description'])} |")
    return f"<!-- fields {pointer} -->\n" + "\n".join(rows) + "\n<!-- end fields -->"


def scalar_table(schema: Schema) -> str:
    rows = ["| shape | what it is (example) |", "|---|---|"]
    for name, node in schema["$defs"].items():
        if not is_object_def(node):
            shape = f'<a id="{anchor(name)}"></a>{name.replace("_", " ")}'
            rows.append(f"| {shape} | {_cell(node['description'])} |")
    return "<!-- scalars -->\n" + "\n".join(rows) + "\n<!-- end scalars -->"


def metrics_table() -> str:
    """The runtime's metric families, from the runtime's own declarations."""
    from meshgen.runtime.observe.metrics import _HELP

    rows = ["| name | type | labels | what it counts |", "|---|---|---|---|"]
    for name, (kind, text, labels) in sorted(_HELP.items()):
        rows.append(f"| `{name}` | {kind} | {', '.join(labels)} | {_cell(text)} |")
    return "<!-- metrics -->\n" + "\n".join(rows) + "\n<!-- end metrics -->"


def options_table() -> str:
    """``python DIST`` options, from the runtime's own argument parser."""
    from meshgen.runtime.app.main import arg_parser

    rows = ["| option | what it does | default |", "|---|---|---|"]
    for action in arg_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.option_strings[-1]
        if action.metavar or action.nargs != 0:
            flag += f" {action.metavar or action.dest.upper()}"
        default = "" if action.default in (None, False, []) else f"`{action.default}`"
        rows.append(f"| `{flag}` | {_cell(action.help or '')} | {default} |")
    return "<!-- runtime options -->\n" + "\n".join(rows) + "\n<!-- end runtime options -->"


def render(doc: str, schema: Schema) -> str:
    tables = frozenset(m.group("pointer") for m in FIELDS.finditer(doc))
    doc = FIELDS.sub(lambda m: field_table(schema, m.group("pointer"), tables), doc)
    doc = SCALARS.sub(lambda _: scalar_table(schema), doc)
    doc = METRICS.sub(lambda _: metrics_table(), doc)
    return OPTIONS.sub(lambda _: options_table(), doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is stale")
    args = parser.parse_args(argv)
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    current = DOC.read_text(encoding="utf-8")
    fresh = render(current, schema)
    if fresh == current:
        return 0
    if args.check:
        print(f"{DOC} is out of date: run python docs/render_reference.py", file=sys.stderr)
        return 1
    DOC.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
