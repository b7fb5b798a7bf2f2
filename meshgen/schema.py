"""Validate a loaded mesh.yaml against schemas/mesh.schema.json and explain every failure.

The happy path is one call into jsonschema-rs (compiled once, lazily). Only when the document is
invalid is python-jsonschema imported: its errors are grouped by the instance path they are
about (an unknown field or a bad key is about the key itself), the most relevant error of each
group is picked with ``best_match``, and it becomes one Diagnostic at the node's span with a
stable E1xx code and a message that names the value, then the rule.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from .diagnostics import Diagnostic, Span, did_you_mean, register
from .resources import data_dir
from .source import Document, PathKey

if TYPE_CHECKING:
    from jsonschema import ValidationError  # type: ignore[import-untyped,unused-ignore]

UNKNOWN_FIELD = register("E101", "unknown field")
WRONG_TYPE = register("E102", "value of the wrong type")
BAD_DURATION = register("E103", "not a duration")
BAD_NAME = register("E104", "not a valid name")
BAD_ADDRESS = register("E105", "not a host:port address")
OUT_OF_RANGE = register("E106", "number out of range")
NOT_ALLOWED = register("E107", "not one of the allowed values")
MISSING_FIELD = register("E108", "missing required field")
EXACTLY_ONE = register("E109", "exactly one of several fields is needed")
BAD_FORMAT = register("E110", "value of the wrong form")
CONFLICT = register("E111", "fields that exclude each other")
BAD_VERSION = register("E112", "unsupported spec version")
DUPLICATE_ITEM = register("E113", "duplicate list item")
TOO_FEW = register("E114", "empty list, mapping or string")

_NAME_RULE = "expected a lowercase letter, then up to 62 lowercase letters, digits or '-'"
_DURATION_RULE = "expected a number followed by ms, s, m, h or d (e.g. 250ms, 5s)"
_ADDRESS_RULE = "expected host:port with a port 0..65535 (e.g. 127.0.0.1:15001, [::1]:15001)"


@cache
def _schema() -> dict[str, Any]:
    with open(data_dir("schemas") / "mesh.schema.json", encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


@cache
def _fast_validator() -> Any:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(_schema())


@cache
def _shapes() -> dict[str, tuple[str, str, str]]:
    """Pattern of a shared $defs shape -> (code, what it is, the rule)."""
    defs = _schema()["$defs"]
    return {
        defs["duration"]["pattern"]: (BAD_DURATION, "a duration", _DURATION_RULE),
        defs["name"]["pattern"]: (BAD_NAME, "a valid name", _NAME_RULE),
        defs["address"]["pattern"]: (BAD_ADDRESS, "an address", _ADDRESS_RULE),
        defs["url_path"]["pattern"]: (BAD_FORMAT, "a path", "it must start with '/'"),
        defs["hostname"]["pattern"]: (BAD_FORMAT, "a DNS name",
                                      "expected letters, digits, '-', '_' and '.'"),
    }


def validate(doc: Document) -> list[Diagnostic]:
    """All schema violations of ``doc``, sorted by position; [] when it is valid."""
    if _fast_validator().is_valid(doc.data):
        return []
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    groups: dict[tuple[PathKey, bool], list[ValidationError]] = {}
    validator = Draft202012Validator(_schema())
    for error in validator.iter_errors(doc.data):
        for target in _targets(error):
            groups.setdefault(target, []).append(error)
    diagnostics = [_diagnose(doc, path, key, errors) for (path, key), errors in groups.items()]
    return sorted(diagnostics, key=lambda d: d.sort_key)


def _targets(error: ValidationError) -> list[tuple[PathKey, bool]]:
    """The paths an error is about, and whether about the key rather than the value.

    An ``additionalProperties`` error is about each unknown key; ``propertyNames`` about the key.
    """
    path: PathKey = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {})
        return [((*path, key), True) for key in error.instance if key not in allowed]
    if "propertyNames" in error.absolute_schema_path:
        return [((*path, str(error.instance)), True)]
    return [(path, False)]


def _diagnose(doc: Document, path: PathKey, on_key: bool,
              errors: list[ValidationError]) -> Diagnostic:
    from jsonschema.exceptions import best_match, relevance  # type: ignore[import-untyped,unused-ignore]

    special = [e for e in errors if e.validator in ("required", "additionalProperties")
               or _exactly_one(e) is not None]
    error = special[0] if special else best_match(errors, key=relevance)
    assert error is not None
    code, message, hint = _explain(error, path)
    if on_key or code in (MISSING_FIELD, EXACTLY_ONE, CONFLICT):
        span: Span = doc.key_span(path)
    else:
        span = doc.span(tuple(error.absolute_path))
    return Diagnostic(code, "error", message, span, hint)


def _exactly_one(error: ValidationError) -> list[str] | None:
    """The field names of a ``oneOf: [{required: [a]}, {required: [b]}]``, else None."""
    if error.validator != "oneOf":
        return None
    options = error.validator_value
    if all(isinstance(o, dict) and set(o) == {"required"} for o in options):
        return [o["required"][0] for o in options]
    return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    return repr(value)


def _kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                       (str, "a string"), (dict, "a mapping"), (list, "a list")):
        if isinstance(value, kind):
            return name
    return "null"


_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false", "object": "a mapping", "array": "a list",
               "null": "null"}


def _where(path: PathKey) -> str:
    if not path:
        return "the top level"
    last = path[-1]
    if isinstance(last, int):
        return f"{path[-2]}[{last}]" if len(path) > 1 else f"item {last}"
    return f"'{last}'"


def _one_of_words(words: list[str]) -> str:
    quoted = [f"'{w}'" for w in words]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _range_rule(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"expected {low}..{high}"
    if schema.get("exclusiveMinimum") is not None:
        return f"expected more than {schema['exclusiveMinimum']}"
    return f"expected at least {low}" if low is not None else f"expected at most {high}"


def _explain(error: ValidationError, path: PathKey) -> tuple[str, str, str | None]:
    """(code, message, hint) for one error; ``path`` is what the diagnostic is about."""
    kind, value, schema = error.validator, error.instance, error.schema
    shape = _shapes().get(schema.get("pattern", "")) if isinstance(schema, dict) else None
    fields = _exactly_one(error)
    if fields is not None:
        found = [f for f in fields if isinstance(value, dict) and f in value]
        state = "neither" if not found else "both " + " and ".join(f"'{f}'" for f in found)
        if len(fields) > 2:
            state = "none" if not found else _one_of_words(found)
        return (EXACTLY_ONE, f"{_where(path)} needs exactly one of {_one_of_words(fields)}; "
                f"found {state}", None)
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        key = str(path[-1])
        hint = did_you_mean(key, allowed) or (
            f"fields allowed here: {', '.join(allowed)}" if allowed else None)
        return UNKNOWN_FIELD, f"unknown field '{key}' in {_where(path[:-1])}", hint
    if kind == "required":
        missing = [f for f in error.validator_value if not (isinstance(value, dict) and f in value)]
        noun = "field" if len(missing) == 1 else "fields"
        return (MISSING_FIELD,
                f"{_where(path)} is missing the required {noun} {_one_of_words(missing)}", None)
    if shape is not None and kind in ("pattern", "type"):
        code, what, rule = shape
        return code, f"{_show(value)} is not {what}: {rule}", None
    if kind == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [
            error.validator_value]
        expected = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
        hint = None
        if isinstance(value, (int, float)) and "string" in types:
            hint = f'quote it: "{value}"'
        return WRONG_TYPE, f"{_show(value)} is {_kind(value)}, expected {expected}", hint
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return OUT_OF_RANGE, f"{_show(value)} is out of range: {_range_rule(schema)}", None
    if kind == "const" and path == ("version",):
        return BAD_VERSION, f"version {_show(value)} is not supported: expected 1", None
    if kind in ("enum", "const"):
        options = error.validator_value if kind == "enum" else [error.validator_value]
        shown: list[Any] = [o for o in options if not isinstance(o, float)]  # TLS "1.2" == 1.2
        hint = did_you_mean(str(value), [str(o) for o in shown if isinstance(o, str)])
        if hint is None and isinstance(value, (int, float)) and str(value) in shown:
            hint = f'quote it: "{value}"'
        rule = "expected " + ", ".join(_show(o) for o in shown)
        return NOT_ALLOWED, f"{_show(value)} is not allowed here: {rule}", hint
    if kind == "not":
        other = next((str(p) for p in reversed(error.absolute_schema_path)
                      if str(p) not in ("not", "properties", path[-1])), "another field")
        return (CONFLICT, f"'{path[-1]}' cannot be combined with '{other}'",
                f"keep one of '{other}' and '{path[-1]}'")
    if kind == "uniqueItems":
        return DUPLICATE_ITEM, f"{_where(path)} lists the same item twice", None
    if kind in ("minItems", "minProperties", "minLength"):
        noun = {"minItems": "list", "minProperties": "mapping", "minLength": "string"}[kind]
        return TOO_FEW, f"{_where(path)} is an empty {noun}: at least one is needed", None
    if kind == "pattern":
        return BAD_FORMAT, f"{_show(value)} does not match {error.validator_value}", None
    return BAD_FORMAT, f"{_show(value)} is not valid here: {error.message}", None
