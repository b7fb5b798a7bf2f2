"""meshgen.schema: mesh.schema.json accepts the v1 contract; each violation is one diagnostic."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.codes import CODES
from meshgen.diagnostics import Diagnostic
from meshgen.resources import data_dir
from meshgen.schema import validate
from meshgen.source import Document, loads

ROOT = Path(__file__).resolve().parents[2]

VALID = """\
version: 1
mesh: {name: shop, domain: mesh.test}
defaults:
  timeout: 10s
  tls: {mode: simple, min_version: "1.3", ca: certs/ca.pem}
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081, weight: 1, zone: a, labels: {version: v1}}
        - {address: "[::1]:9082", weight: 65535, zone: b, labels: {version: v2}}
    subsets: {v1: {labels: {version: v1}}, v2: {labels: {version: v2}}}
    load_balancer: {policy: ring_hash, hash_on: {header: x-user}}
    health_check:
      http: {path: /healthz, expected_statuses: [200, 204]}
      interval: 5s
      timeout: 1s
      healthy_threshold: 2
      unhealthy_threshold: 3
    outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s,
                        max_ejection_percent: 50}
    circuit_breaker: {max_connections: 1024, max_pending_requests: 1024, max_requests: 1024}
    connect_timeout: 5s
    timeout: 15s
    idle_timeout: 60s
    retries:
      attempts: 2
      per_try_timeout: 500ms
      on: [connect-failure, reset, 5xx, gateway-error, retriable-4xx]
      backoff: {base: 25ms, max: 250ms}
      budget: {ratio: 0.2, min_per_second: 10}
      idempotent_only: true
    rate_limit: {requests_per_second: 100, burst: 200}
    failover: {zones: [a, b], panic_threshold: 50, backup: reviews-dr}
    tls:
      mode: mutual
      ca: certs/ca.pem
      cert: certs/frontend.pem
      key: certs/frontend-key.pem
      sni: reviews.mesh.test
      subject_alt_names: [spiffe://shop/reviews]
      min_version: "1.2"
      verify: true
  reviews-dr:
    discovery: {dns: {name: reviews, type: SRV, refresh: 30s}}
  ratings:
    discovery: {dns: {name: ratings.mesh.test, type: A, port: 9080}}
    health_check: {tcp: {}}
routes:
  - name: reviews-jason
    match:
      host: reviews
      path_prefix: /
      methods: [GET]
      headers: {end-user: {exact: jason}, x-debug: {present: true}}
    to: [{service: reviews, subset: v2, weight: 100}]
    timeout: 1s
    retries: {attempts: 1}
    rate_limit: {requests_per_second: 5}
    fault: {delay: {fixed: 7s, percent: 100}, abort: {status: 503, percent: 10}}
    mirror: {service: reviews, subset: v1, percent: 10}
    rewrite: {path_prefix: /v2/, host: reviews.internal}
    headers:
      request: {set: {x-env: prod}, remove: [x-debug]}
      response: {set: {x-served-by: meshgen}, remove: [server]}
  - name: old
    match: {path_exact: /old}
    redirect: {location: https://new.example/, status: 301}
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes: [reviews-jason, old]
    tls: {cert: certs/edge.pem, key: certs/edge-key.pem, ca: certs/ca.pem,
          client_certificates: required, min_version: "1.2"}
admin: 127.0.0.1:15000
access:
  - {from: frontend, to: reviews, methods: [POST], paths: [/charge]}
  - {from: "*", to: ratings}
monitoring:
  alerts:
    - {name: reviews-errors, service: reviews, when: "error_rate > 5%", for: 2m,
       severity: page, summary: "reviews is failing"}
  slos:
    - {name: reviews-availability, service: reviews, objective: 99.9, window: 30d}
  alertmanager: http://127.0.0.1:9093
"""


def doc_of(text: str) -> Document:
    doc, diags = loads(text, "mesh.yaml")
    assert doc is not None, diags
    return doc


def errors_of(text: str) -> list[Diagnostic]:
    return validate(doc_of(text))


def only(diags: list[Diagnostic]) -> Diagnostic:
    assert len(diags) == 1, diags
    return diags[0]


def mutate(path: tuple[str | int, ...], value: Any) -> str:
    """VALID with ``value`` set at ``path`` (a value of None deletes the entry)."""
    data = yaml.safe_load(VALID.replace("on: [", "'on': ["))
    target = data
    for step in path[:-1]:
        target = target[step]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """The shipped schema passes the Draft 2020-12 meta-schema."""
    schema = json.loads((data_dir("schemas") / "mesh.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_object_rejects_unknown_fields() -> None:
    """additionalProperties is false (or a schema) on every object of the schema."""
    schema = json.loads((data_dir("schemas") / "mesh.schema.json").read_text())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert "additionalProperties" in node, node.get("description")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)


def test_full_spec_is_valid() -> None:
    """Every field the reference shows is accepted."""
    assert errors_of(VALID) == []


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*/mesh.yaml")), ids=lambda p: p.parent.name
)
def test_examples_are_valid(example: Path) -> None:
    """The shipped examples validate."""
    doc, diags = loads(example.read_text(), str(example))
    assert doc is not None and diags == []
    assert validate(doc) == []


CASES: list[tuple[str, tuple[str | int, ...], Any, str, str]] = [
    # code, path, new value, expected message fragment, what the span is on
    ("E101", ("services", "reviews", "retires"), {"attempts": 1}, "unknown field 'retires'", "key"),
    ("E101", ("defaults", "discovery"), {"dns": {"name": "x"}}, "unknown field 'discovery'", "key"),
    (
        "E102",
        ("services", "reviews", "retries", "idempotent_only"),
        "maybe",
        "'maybe' is a string, expected true or false",
        "value",
    ),
    ("E103", ("services", "reviews", "timeout"), 5, "5 is not a duration", "value"),
    ("E103", ("services", "reviews", "timeout"), "5", "'5' is not a duration", "value"),
    ("E104", ("routes", 0, "name"), "Reviews", "'Reviews' is not a valid name", "value"),
    (
        "E104",
        ("services", "Bad_Name"),
        {"discovery": {"dns": {"name": "x"}}},
        "'Bad_Name' is not a valid name",
        "key",
    ),
    ("E105", ("admin",), "localhost", "'localhost' is not an address", "value"),
    ("E105", ("listeners", 0, "address"), "127.0.0.1:65536", "is not an address", "value"),
    (
        "E106",
        ("routes", 0, "to", 0, "weight"),
        101,
        "101 is out of range: expected 0..100",
        "value",
    ),
    (
        "E106",
        ("services", "reviews", "discovery", "static", 0, "weight"),
        0,
        "0 is out of range: expected 1..65535",
        "value",
    ),
    (
        "E106",
        ("services", "reviews", "failover", "panic_threshold"),
        100.5,
        "100.5 is out of range",
        "value",
    ),
    (
        "E107",
        ("services", "reviews", "load_balancer", "policy"),
        "rond_robin",
        "'rond_robin' is not allowed here",
        "value",
    ),
    (
        "E108",
        ("services", "reviews", "discovery"),
        None,
        "'reviews' is missing the required field 'discovery'",
        "key",
    ),
    (
        "E109",
        ("services", "reviews", "discovery", "dns"),
        {"name": "reviews"},
        "needs exactly one of 'static' or 'dns'; found both",
        "parent",
    ),
    ("E110", ("routes", 0, "match", "path_prefix"), "api", "'api' is not a path", "value"),
    (
        "E111",
        ("routes", 1, "match", "path_regex"),
        "/o.*",
        "'path_regex' cannot be combined",
        "key",
    ),
    ("E112", ("version",), 2, "version 2 is not supported", "value"),
    (
        "E113",
        ("routes", 0, "match", "methods"),
        ["GET", "GET"],
        "lists the same item twice",
        "value",
    ),
    ("E114", ("routes", 0, "to"), [], "'to' is an empty list", "value"),
]


@pytest.mark.parametrize(
    ("code", "path", "value", "message", "on"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_each_code(
    code: str, path: tuple[str | int, ...], value: Any, message: str, on: str
) -> None:
    """One mutation gives one diagnostic with its code, message and span."""
    doc = doc_of(mutate(path, value))
    diag = only(validate(doc))
    assert diag.code == code and message in diag.message, diag
    assert code in CODES
    if value is None or on == "parent":
        expected = doc.key_span(path[:-1])
    elif on == "key":
        expected = doc.key_span(path)
    else:
        expected = doc.span(path)
    assert diag.span == expected


def test_did_you_mean_for_fields_and_enums() -> None:
    """Misspelt fields and enum values get a suggestion."""
    diag = only(errors_of(mutate(("services", "reviews", "retires"), {"attempts": 1})))
    assert diag.hint == "did you mean 'retries'?"
    diag = only(errors_of(mutate(("services", "reviews", "load_balancer", "policy"), "maglef")))
    assert diag.hint == "did you mean 'maglev'?"


def test_unquoted_numbers_get_a_quote_hint() -> None:
    """A number where a string is expected suggests quoting it."""
    diag = only(errors_of(mutate(("routes", 0, "match", "host"), 42)))
    assert diag.code == "E102" and diag.hint == 'quote it: "42"'


def test_tls_version_may_be_unquoted() -> None:
    """min_version: 1.3 (a YAML float) is accepted like "1.3"."""
    assert errors_of(mutate(("defaults", "tls", "min_version"), 1.3)) == []


def test_all_errors_reported_sorted() -> None:
    """Every violation is reported, one per path, sorted by position."""
    text = "version: 2\nmesh: {name: Shop}\nservices: {}\nextra: 1\n"
    diags = errors_of(text)
    assert [(d.code, d.span.line) for d in diags] == [
        ("E112", 1),
        ("E104", 2),
        ("E114", 3),
        ("E101", 4),
    ]


def test_missing_top_level_fields() -> None:
    """A document without required top-level fields names them all at the document start."""
    diag = only(errors_of("admin: 127.0.0.1:1\n"))
    assert diag.code == "E108" and (diag.span.line, diag.span.col) == (1, 1)
    assert "'version', 'mesh' and 'services'" in diag.message


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 200)
    | st.sampled_from(["", "5s", "x", "Abc", "127.0.0.1:1", "round_robin", "/p", "1.2"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "to", "x", "static", "dns", "weight"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)
PATHS = [c[1] for c in CASES] + [
    ("services", "ratings"),
    ("routes", 1),
    ("monitoring",),
    ("listeners", 0, "tls"),
    ("access", 1, "from"),
]


@settings(deadline=None, max_examples=150)
@given(st.sampled_from(PATHS), json_values)
def test_mutations_never_crash_and_agree_with_jsonschema(
    path: tuple[str | int, ...], value: Any
) -> None:
    """Any mutation yields diagnostics exactly when python-jsonschema finds the spec invalid."""
    text = mutate(path, copy.deepcopy(value) if value is not None else "x")
    doc = doc_of(text)
    schema = json.loads((data_dir("schemas") / "mesh.schema.json").read_text())
    valid = jsonschema.Draft202012Validator(schema).is_valid(doc.data)
    diags = validate(doc)
    assert (diags == []) == valid
    assert all(d.code in CODES and d.span.line >= 1 for d in diags)


def test_version_must_be_the_integer_one() -> None:
    """`version: 1.0` equals 1 to JSON Schema, but it is not the integer the SPEC asks for."""
    diag = only(errors_of(VALID.replace("version: 1\n", "version: 1.0\n", 1)))
    assert (diag.code, diag.span.line) == ("E112", 1)
    assert diag.message == "version 1.0 is not supported: expected the integer 1"
    assert errors_of(VALID) == []


@pytest.mark.parametrize(
    ("path", "value", "shown"),
    [
        (("defaults", "tls", "min_version"), "1.1", "1.1"),
        (("defaults", "tls", "min_version"), 1.0, "1.0"),
        (("services", "ratings", "tls"), {"min_version": "1.0"}, "1.0"),
        (("listeners", 0, "tls", "min_version"), "1.1", "1.1"),
    ],
)
def test_old_tls_versions_are_rejected_everywhere(
    path: tuple[str | int, ...], value: Any, shown: str
) -> None:
    """min_version below 1.2 is E502 even where no service uses TLS (ratings has none)."""
    doc = doc_of(mutate(path, value))
    diag = only(validate(doc))
    assert diag.code == "E502" and diag.message == f"TLS min_version '{shown}' is below 1.2"
    where = (*path, "min_version") if isinstance(value, dict) else path
    assert diag.span == doc.span(where)


def _string_schemas(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every subschema that accepts strings (other than fixed enum/const values)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        types = node.get("type")
        if types == "string" or (isinstance(types, list) and "string" in types):
            found.append((where, node))
        for key, value in node.items():
            found += _string_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _string_schemas(value, f"{where}/{index}")
    return found


def test_every_string_in_the_schema_excludes_control_characters() -> None:
    """The fast validator rejects CR/LF/NUL/DEL in every string but an alert's summary.

    This is what lets validate() skip its E115 walk on valid specs.
    """
    schema = json.loads((data_dir("schemas") / "mesh.schema.json").read_text())
    strings = _string_schemas(schema)
    assert len(strings) > 10
    free = [where for where, node in strings if "pattern" not in node]
    assert free == ["#/properties/monitoring/properties/alerts/items/properties/summary"]
    for where, node in strings:
        if "pattern" not in node:
            continue
        search = re.compile(node["pattern"]).search
        for bad in ("\r", "\n", "\x00", "\x7f", "\u2028", "\x85"):
            for text in (bad, "a" + bad + "b", "/a" + bad + "b", "1" + bad + "2s", "a.b" + bad):
                assert search(text) is None or ("\n" in text and text.endswith("\n")), (where, text)


def test_control_characters_are_one_clear_diagnostic() -> None:
    """E115 at the value (or key), replacing the pattern error for that string."""
    doc = doc_of(
        mutate(
            ("routes", 0, "headers", "response", "set"), {"x-served-by": "v\r\nSet-Cookie: evil=2"}
        )
    )
    diag = only(validate(doc))
    path = ("routes", 0, "headers", "response", "set", "x-served-by")
    assert diag.code == "E115" and diag.span == doc.span(path)
    assert diag.message.startswith(
        "'x-served-by' ('v\\r\\nSet-Cookie: evil=2') contains a carriage return (U+000D)"
    )
    doc = doc_of(
        mutate(("services", "reviews", "discovery", "static", 0, "labels"), {"version\n": "v1"})
    )
    diag = only(validate(doc))
    key = ("services", "reviews", "discovery", "static", 0, "labels", "version\n")
    assert diag.code == "E115" and diag.span == doc.key_span(key)


def test_trailing_newline_is_caught_although_python_re_dollar_allows_it() -> None:
    """`$` matches before a final newline in Python: 'reviews\\n' must still be E115."""
    diag = only(errors_of(mutate(("routes", 0, "name"), "reviews\n")))
    assert diag.code == "E115"


@pytest.mark.parametrize(
    ("path", "good", "bad"),
    [
        (("routes", 0, "headers", "request", "remove", 0), "x-debug_2!#$%&'*+.^`|~", "x debug"),
        (("routes", 0, "headers", "request", "remove", 0), "x-debug", "x:debug"),
        (("services", "reviews", "load_balancer", "hash_on", "header"), "x-user", "x user"),
        (("routes", 0, "match", "host"), "Reviews.mesh.test.", "reviews mesh"),
        (("routes", 0, "match", "host"), "[::1]:8080", "::1"),
        (("routes", 0, "match", "host"), "10.0.0.1:80", "a/b"),
        (("routes", 0, "rewrite", "host"), "reviews.internal:8443", "reviews.internal/x"),
        (("services", "reviews", "tls", "sni"), "::1", "reviews.mesh.test:443"),
        (("services", "reviews", "tls", "subject_alt_names", 0), "spiffe://shop/a", "a b"),
        (("routes", 1, "redirect", "location"), "/new?x=1", "https://a/ b"),
        (("routes", 0, "match", "path_prefix"), "/api/%20", "/a b"),
        (("monitoring", "alertmanager"), "http://am:9093", "http://am 9093"),
    ],
)
def test_field_shapes(path: tuple[str | int, ...], good: str, bad: str) -> None:
    """Header names are tokens, hosts DNS names or IPs, URIs and paths have no spaces."""
    assert errors_of(mutate(path, good)) == []
    diag = only(errors_of(mutate(path, bad)))
    assert diag.code == "E110", diag
