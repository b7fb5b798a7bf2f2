"""Validate a loaded mesh.yaml against schemas/mesh.schema.json and explain every failure.

The happy path is one call into jsonschema-rs (compiled once, lazily). Only when the document is
invalid is python-jsonschema imported: its errors are grouped by the instance path they are
about (an unknown field or a bad key is about the key itself), the most relevant error of each
group is picked with ``best_match``, and it becomes one Diagnostic at the node's span with a
stable E1xx code and a message that names the value, then the rule.

Two rules are checked in code because JSON Schema cannot say them: ``version`` must be the
integer 1 (JSON Schema treats ``1.0`` as equal to ``1``), and no string -- value or mapping key --
outside free text (an alert's ``summary``) holds a control character or line break (E115).
Every string in the schema has a pattern that excludes those characters, so the fast path stays
one call; when validation fails, E115 replaces whatever else the schema says about that string.
The E115 rule is what keeps header values, hosts, paths and file names from injecting lines into
HTTP heads and into the generated HAProxy config.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from .diagnostics import Diagnostic, Span, did_you_mean
from .resources import schema_text
from .source import Document, PathKey

if TYPE_CHECKING:
    from jsonschema import ValidationError  # type: ignore[import-untyped,unused-ignore]

UNKNOWN_FIELD = "E101"
WRONG_TYPE = "E102"
BAD_DURATION = "E103"
BAD_NAME = "E104"
BAD_ADDRESS = "E105"
OUT_OF_RANGE = "E106"
NOT_ALLOWED = "E107"
MISSING_FIELD = "E108"
EXACTLY_ONE = "E109"
BAD_FORMAT = "E110"
CONFLICT = "E111"
BAD_VERSION = "E112"
DUPLICATE_ITEM = "E113"
TOO_FEW = "E114"
CONTROL_CHARACTER = "E115"
OLD_TLS = "E502"

_CONTROL = "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]"
"""C0 controls except tab, DEL, C1 controls, and the Unicode line and paragraph separators: a
pattern compiled when a spec is invalid (the schema's own patterns exclude them), not at import
(~0.5 ms of a validate)."""
_CHARACTER_NAMES = {
    "\r": "a carriage return",
    "\n": "a line feed",
    "\x00": "a NUL character",
    "\x7f": "a DEL character",
    "\x85": "a next-line character",
    "\u2028": "a line separator",
    "\u2029": "a paragraph separator",
}

_NAME_RULE = "expected a lowercase letter, then up to 62 lowercase letters, digits or '-'"
_DURATION_RULE = "expected a number followed by ms, s, m, h or d (e.g. 250ms, 5s)"
_ADDRESS_RULE = (
    'expected host:port with a port 0..65535 (e.g. 127.0.0.1:15001, "[::1]:15001" quoted)'
)


@cache
def _schema() -> dict[str, Any]:
    import json  # only to explain an invalid spec: a valid one need not import it (~3 ms)

    schema: dict[str, Any] = json.loads(schema_text())
    return schema


@cache
def _fast_validator() -> Any:
    """jsonschema-rs's validator, given the schema's text: it parses JSON itself."""
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(schema_text())


@cache
def _shapes() -> dict[str, tuple[str, str, str]]:
    """Pattern of a shared $defs shape -> (code, what it is, the rule)."""
    defs = _schema()["$defs"]
    return {
        defs["duration"]["pattern"]: (BAD_DURATION, "a duration", _DURATION_RULE),
        defs["name"]["pattern"]: (BAD_NAME, "a valid name", _NAME_RULE),
        defs["address"]["pattern"]: (BAD_ADDRESS, "an address", _ADDRESS_RULE),
        defs["url_path"]["pattern"]: (BAD_FORMAT, "a path", "it must start with '/'"),
        defs["hostname"]["pattern"]: (
            BAD_FORMAT,
            "a DNS name",
            "expected letters, digits, '-', '_' and '.'",
        ),
        defs["token"]["pattern"]: (
            BAD_FORMAT,
            "a header or cookie name",
            "expected an RFC 9110 token: letters, digits and !#$%&'*+-.^_`|~",
        ),
        defs["host"]["pattern"]: (
            BAD_FORMAT,
            "a host",
            "expected a DNS name or an IP address ([::1] for IPv6), optionally with :port",
        ),
        defs["server_name"]["pattern"]: (
            BAD_FORMAT,
            "a server name",
            "expected a DNS name or an IP address",
        ),
        defs["sni_pattern"]["pattern"]: (
            BAD_FORMAT,
            "a server name pattern",
            "expected a lower-case DNS name, or '*.' followed by one (e.g. *.internal.test)",
        ),
        defs["grpc_name"]["pattern"]: (
            BAD_FORMAT,
            "a gRPC service name",
            "expected identifiers separated by dots (e.g. checkout.v1.Checkout)",
        ),
        defs["uri"]["pattern"]: (BAD_FORMAT, "a URI", "spaces are not allowed (write %20)"),
        defs["http_url"]["pattern"]: (
            BAD_FORMAT,
            "an http(s) URL",
            "expected http:// or https:// then host[:port][/path], without spaces",
        ),
    }


def validate(doc: Document) -> list[Diagnostic]:
    """All schema violations of ``doc``, sorted by position; [] when it is valid."""
    return sorted((d for _, d in check(doc)), key=lambda d: d.sort_key)


def check(doc: Document) -> list[tuple[PathKey, Diagnostic]]:
    """Each path of ``doc`` that breaks the schema, with its diagnostic.

    A path is where the offending value (or unknown key) is, so the pipeline can tell which
    part of the spec to leave out and still check the rest.
    """
    found = _float_version(doc)
    if _fast_validator().is_valid(doc.data):
        return [(path, d) for (path, _), d in found.items()]
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    for path, on_key, text in _control_strings(doc.data):
        found[(path, on_key)] = _control_diagnostic(doc, path, on_key, text)
    groups: dict[tuple[PathKey, bool], list[ValidationError]] = {}
    validator = Draft202012Validator(_schema())
    for error in validator.iter_errors(doc.data):
        for target in _targets(error):
            if target not in found:
                groups.setdefault(target, []).append(error)
    for (path, key), errors in groups.items():
        found[(path, key)] = _diagnose(doc, path, key, errors)
    return [(path, d) for (path, _), d in found.items()]


def _float_version(doc: Document) -> dict[tuple[PathKey, bool], Diagnostic]:
    """``version: 1.0`` passes JSON Schema's ``const: 1`` (1.0 == 1) but is not the integer 1."""
    version = doc.data.get("version") if isinstance(doc.data, dict) else None
    if not isinstance(version, float):
        return {}
    return {
        (("version",), False): Diagnostic(
            BAD_VERSION,
            "error",
            f"version {version!r} is not supported: expected the integer 1",
            doc.span(("version",)),
            "write `version: 1`",
        )
    }


def _free_text(path: PathKey) -> bool:
    """Fields that may hold any text: an alert's ``summary``."""
    return len(path) == 4 and path[:2] == ("monitoring", "alerts") and path[3] == "summary"


def _control_strings(data: Any) -> Iterator[tuple[PathKey, bool, str]]:
    """(path, whether it is the key, text) of every string holding a control character."""
    stack: list[tuple[PathKey, Any]] = [((), data)]
    search = re.compile(_CONTROL).search
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if search(value) and not _free_text(path):
                yield path, False, value
        elif isinstance(value, dict):
            for key, item in value.items():
                if search(key):
                    yield (*path, key), True, key
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))


def _control_diagnostic(doc: Document, path: PathKey, on_key: bool, text: str) -> Diagnostic:
    found = re.search(_CONTROL, text)
    assert found is not None
    char = found.group()
    what = _CHARACTER_NAMES.get(char, "a control character")
    shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
    subject = f"the key {shown}" if on_key else f"{_where(path)} ({shown})"
    message = (
        f"{subject} contains {what} (U+{ord(char):04X}): control characters and line "
        "breaks are not allowed here"
    )
    span = doc.key_span(path) if on_key else doc.span(path)
    hint = (
        "they could inject headers or config lines; remove it (only an alert's summary "
        "may hold free text)"
    )
    return Diagnostic(CONTROL_CHARACTER, "error", message, span, hint)


def _targets(error: ValidationError) -> list[tuple[PathKey, bool]]:
    """The paths an error is about, and whether about the key rather than the value.

    An ``additionalProperties`` error is about each unknown key; ``propertyNames`` about the key.
    """
    path: PathKey = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = _schema_of(error).get("properties", {})
        return [((*path, key), True) for key in error.instance if key not in allowed]
    if "propertyNames" in error.absolute_schema_path:
        return [((*path, str(error.instance)), True)]
    return [(path, False)]


def _diagnose(
    doc: Document, path: PathKey, on_key: bool, errors: list[ValidationError]
) -> Diagnostic:
    from jsonschema.exceptions import best_match, relevance  # type: ignore[import-untyped,unused-ignore]

    special = [
        e
        for e in errors
        if e.validator in ("required", "additionalProperties") or _exactly_one(e) is not None
    ]
    error = special[0] if special else best_match(errors, key=relevance)
    assert error is not None
    code, message, hint = _explain(error, path)
    if on_key or code in (MISSING_FIELD, EXACTLY_ONE, CONFLICT):
        span: Span = doc.key_span(path)
    else:
        span = doc.span(tuple(error.absolute_path))
    return Diagnostic(code, "error", message, span, hint)


def _ipv6_list(value: Any) -> str | None:
    """The hint for ``[::1]`` written unquoted: YAML read it as a list holding ``::1``."""
    if isinstance(value, list) and len(value) == 1 and ":" in str(value[0]):
        return f'quote an IPv6 address: "[{value[0]}]" (unquoted, [ ] make a YAML list)'
    return None


_OWNERS = {"services": "a service", "routes": "a route", "listeners": "a listener"}


def _one_level_up(key: str, path: PathKey) -> str | None:
    """``'health_check' belongs under a service``, when ``key`` is a field one level up."""
    if len(path) < 2:
        return None
    above = _schema_at(path[:-2])
    if above is None or key not in above.get("properties", {}):
        return None
    parent = path[-2]
    owner = path[:-2]
    if len(owner) == 2 and owner[0] in _OWNERS:
        name = f" ('{owner[1]}')" if isinstance(owner[1], str) else ""
        where = _OWNERS[str(owner[0])] + name
    else:
        where = _where(owner)
    return f"'{key}' belongs under {where}, not under '{parent}': indent it like '{parent}'"


def _schema_at(path: PathKey) -> Mapping[str, Any] | None:
    """The object schema that describes the value at ``path`` (None if it cannot be told)."""
    schema: Mapping[str, Any] = _schema()
    for step in path:
        schema = _resolved(schema)
        if isinstance(step, int):
            items = schema.get("items")
            if not isinstance(items, dict):
                return None
            schema = items
            continue
        properties = schema.get("properties", {})
        if step in properties:
            schema = properties[step]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return None
    return _resolved(schema)


def _resolved(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a ``$ref`` to ``#/$defs/NAME`` followed (the schema uses no others)."""
    while isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/$defs/"):
        schema = _schema()["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def _schema_of(error: ValidationError) -> Mapping[str, Any]:
    """The (sub)schema that failed; {} for the boolean schemas mesh.schema.json does not use."""
    schema = error.schema
    return schema if isinstance(schema, Mapping) else {}


def _listed(value: Any) -> list[Any]:
    """A keyword's value as a list: ``required``/``enum``/``oneOf`` lists, a ``type`` or two."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _exactly_one(error: ValidationError) -> list[str] | None:
    """The field names of a ``oneOf``/``anyOf: [{required: [a]}, {required: [b]}]``, else None.

    ``anyOf`` is used where a ``dependentSchemas`` rule already reports "both" as E111.
    """
    if error.validator not in ("oneOf", "anyOf"):
        return None
    options = _listed(error.validator_value)
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
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (dict, "a mapping"),
        (list, "a list"),
    ):
        if isinstance(value, kind):
            return name
    return "null"


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


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


def _all_of_words(words: list[str]) -> str:
    quoted = [f"'{w}'" for w in words]
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _expected(schema: Mapping[str, Any]) -> str:
    """What a value of ``schema`` must be, from its description's first sentence."""
    text = str(schema.get("description") or "a value of another form")
    first = text.split(". ", 1)[0].rstrip(".")
    return first[:1].lower() + first[1:]


def _range_rule(schema: Mapping[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"expected {low}..{high}"
    if schema.get("exclusiveMinimum") is not None:
        return f"expected more than {schema['exclusiveMinimum']}"
    return f"expected at least {low}" if low is not None else f"expected at most {high}"


def _explain(error: ValidationError, path: PathKey) -> tuple[str, str, str | None]:
    """(code, message, hint) for one error; ``path`` is what the diagnostic is about."""
    kind, value, schema = error.validator, error.instance, _schema_of(error)
    shape = _shapes().get(schema.get("pattern", ""))
    fields = _exactly_one(error)
    if fields is not None:
        found = [f for f in fields if isinstance(value, dict) and f in value]
        state = "neither" if not found else "both " + " and ".join(f"'{f}'" for f in found)
        if len(fields) > 2:
            state = "none" if not found else _one_of_words(found)
        return (
            EXACTLY_ONE,
            f"{_where(path)} needs exactly one of {_one_of_words(fields)}; found {state}",
            None,
        )
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        key = str(path[-1])
        hint = (
            did_you_mean(key, allowed)
            or _one_level_up(key, path)
            or (f"fields allowed here: {', '.join(allowed)}" if allowed else None)
        )
        return UNKNOWN_FIELD, f"unknown field '{key}' in {_where(path[:-1])}", hint
    if kind == "required":
        missing = [
            f
            for f in _listed(error.validator_value)
            if not (isinstance(value, dict) and f in value)
        ]
        noun = "field" if len(missing) == 1 else "fields"
        return (
            MISSING_FIELD,
            f"{_where(path)} is missing the required {noun} {_all_of_words(missing)}",
            None,
        )
    if shape is not None and (kind == "pattern" or (kind == "type" and shape[0] != BAD_FORMAT)):
        code, what, rule = shape
        if what == "a path" and isinstance(value, str) and value.startswith("/"):
            rule = "spaces are not allowed (write %20)"
        return code, f"{_show(value)} is not {what}: {rule}", _ipv6_list(value)
    if kind == "type":
        types = _listed(error.validator_value)
        expected = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
        hint = None
        if isinstance(value, (int, float)) and "string" in types:
            hint = f'quote it: "{value}"'
        return WRONG_TYPE, f"{_show(value)} is {_kind(value)}, expected {expected}", hint
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return OUT_OF_RANGE, f"{_show(value)} is out of range: {_range_rule(schema)}", None
    if kind == "const" and path == ("version",):
        if isinstance(value, str) and value.strip() in ("1", "1.0"):
            return (
                BAD_VERSION,
                f'version "{value}" is a string: write 1, not "{value}"',
                "quoted, YAML reads it as text; the version is the number 1",
            )
        return BAD_VERSION, f"version {_show(value)} is not supported: expected 1", None
    if kind == "enum" and path[-1:] == ("min_version",):
        below = str(value) in ("1", "1.0", "1.1")
        return (
            OLD_TLS,
            f"TLS min_version '{value}' is " + ("below 1.2" if below else "not supported"),
            "TLS 1.0 and 1.1 are deprecated (RFC 8996); use '1.2' or '1.3'",
        )
    if kind in ("enum", "const"):
        options = _listed(error.validator_value) if kind == "enum" else [error.validator_value]
        shown: list[Any] = [o for o in options if not isinstance(o, float)]  # TLS "1.2" == 1.2
        hint = did_you_mean(str(value), [str(o) for o in shown if isinstance(o, str)])
        if hint is None and isinstance(value, (int, float)) and str(value) in shown:
            hint = f'quote it: "{value}"'
        rule = "expected " + ", ".join(_show(o) for o in shown)
        return NOT_ALLOWED, f"{_show(value)} is not allowed here: {rule}", hint
    if kind == "not":
        other = next(
            (
                str(p)
                for p in reversed(error.absolute_schema_path)
                if str(p) not in ("not", "properties", path[-1])
            ),
            "another field",
        )
        return (
            CONFLICT,
            f"'{path[-1]}' cannot be combined with '{other}'",
            f"keep one of '{other}' and '{path[-1]}'",
        )
    if kind == "uniqueItems":
        return DUPLICATE_ITEM, f"{_where(path)} lists the same item twice", None
    if kind in ("minItems", "minProperties", "minLength"):
        noun = {"minItems": "list", "minProperties": "mapping", "minLength": "string"}[kind]
        return TOO_FEW, f"{_where(path)} is an empty {noun}: at least one is needed", None
    if kind == "pattern":  # a shape without a rule above: say what is expected, not the regex
        return BAD_FORMAT, f"{_show(value)} is not valid here: expected {_expected(schema)}", None
    return BAD_FORMAT, f"{_show(value)} is not valid here: {error.message}", None
