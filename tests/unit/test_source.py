"""meshgen.source: safe YAML loading with spans, and one clear diagnostic per broken input."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgen.diagnostics import Diagnostic
from meshgen.source import MAX_BYTES, Document, load, loads
from meshgen.source_errors import nesting_error

SPEC = """\
version: 1
mesh:
  name: shop
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081, weight: 1}
        - address: 127.0.0.1:9082
    retries:
      on: [5xx, reset]
"""


def only(diags: list[Diagnostic]) -> Diagnostic:
    assert len(diags) == 1, diags
    return diags[0]


def where(diag: Diagnostic) -> tuple[str, int, int]:
    return diag.code, diag.span.line, diag.span.col


def ok(text: str) -> Document:
    doc, diags = loads(text, "mesh.yaml")
    assert diags == [] and doc is not None
    return doc


def test_plain_data_and_string_keys() -> None:
    """The document becomes plain data; `on` stays a string key."""
    doc = ok(SPEC)
    assert doc.data["version"] == 1
    assert doc.data["services"]["reviews"]["retries"] == {"on": ["5xx", "reset"]}
    static = doc.data["services"]["reviews"]["discovery"]["static"]
    assert static[1] == {"address": "127.0.0.1:9082"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("42", 42),
        ("-7", -7),
        ("0o17", 15),
        ("0x1F", 31),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("-1e3", -1000.0),
        ("2024-01-01", "2024-01-01"),
        ("'5'", "5"),
        ('"true"', "true"),
        ("5s", "5s"),
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("!!str 5", "5"),
        ("!!int 5", 5),
        ("!!float 5", 5.0),
        ("9" * 5000, "9" * 5000),
        ("9" * 300, int("9" * 300)),
    ],
)
def test_core_schema_scalars(text: str, value: object) -> None:
    """Scalars follow the YAML 1.2 core schema, not YAML 1.1."""
    assert ok(f"a: {text}\n").data["a"] == value


def test_keys_are_raw_text() -> None:
    """Keys keep their source text: `1`, `true` and `null` keys are strings."""
    assert ok("1: a\ntrue: b\nnull: c\n").data == {"1": "a", "true": "b", "null": "c"}


def test_spans_resolve_lazily_by_path() -> None:
    """span() gives the value's span, key_span() the key's, absent paths their nearest ancestor."""
    doc = ok(SPEC)
    assert doc.span(("services", "reviews", "discovery", "static", 0, "address")) == (
        doc.span(("services", "reviews", "discovery", "static", 0, "address"))
    )
    address = doc.span(("services", "reviews", "discovery", "static", 0, "address"))
    assert (address.line, address.col, address.end_line, address.end_col) == (8, 21, 8, 35)
    key = doc.key_span(("services", "reviews", "retries"))
    assert (key.line, key.col, key.end_col) == (10, 5, 12)
    missing = doc.span(("services", "reviews", "timeout"))
    assert (missing.line, missing.col) == (6, 5)  # the `reviews` mapping starts at `discovery`
    assert doc.key_span(("services", "reviews", "discovery", "static", 1)).line == 9
    assert doc.line_text(9) == "        - address: 127.0.0.1:9082"
    assert doc.line_text(999) == ""


def test_columns_count_characters() -> None:
    """Columns count characters, not UTF-8 bytes."""
    doc = ok("é: 1\nb: {ü: x, k: y}\n")
    assert doc.key_span(("b", "k")).col == 11


@pytest.mark.parametrize(
    ("text", "code", "line", "col"),
    [
        ("", "E005", 1, 1),
        ("# only a comment\n", "E005", 1, 1),
        ("---\n", "E005", 1, 1),
        ("- a\n- b\n", "E007", 1, 1),
        ("just text\n", "E007", 1, 1),
        ("a: 1\n---\nb: 2\n", "E006", 2, 1),
        ("a: [1\nb: 2\n", "E004", 2, 2),
        ("a: b: c\n", "E004", 1, 5),
        ("a: *nope\n", "E004", 1, 4),
        ("a: 1\nb:\n  c: 1\n  c: 2\n", "E008", 4, 3),
        ("x: &x {a: 1}\ny:\n  <<: *x\n", "E012", 3, 3),
        ("a: &a\n  b: *a\n", "E010", 2, 3),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "E011", 1, 104),
        ("a: .nan\n", "E015", 1, 4),
        ("a: [1, -.Inf]\n", "E015", 1, 8),
        ("a: {b: 1e999}\n", "E015", 1, 8),
        ("a: !!float .inf\n", "E015", 1, 4),
        ("a: 1" + "0" * 400 + "\n", "E015", 1, 4),
        ("a: [0x" + "f" * 300 + "]\n", "E015", 1, 5),
        ("[a]: 1\n", "E013", 1, 1),
        ("a: !!python/object:os.system x\n", "E014", 1, 4),
        ("a: !!int five\n", "E014", 1, 4),
        ("a: !!set {x}\n", "E014", 1, 4),
        ("é: \x01\n", "E004", 1, 4),
        ("a: \ud800\n", "E003", 1, 4),
    ],
)
def test_one_clear_diagnostic(text: str, code: str, line: int, col: int) -> None:
    """Each broken input gets exactly one diagnostic, at the right position, and no Document."""
    doc, diags = loads(text, "mesh.yaml")
    assert doc is None
    diag = only(diags)
    assert where(diag) == (code, line, col)
    assert diag.span.file == "mesh.yaml" and diag.severity == "error"


def test_duplicate_key_points_back_at_the_first() -> None:
    """A duplicate key names the first occurrence as a related span."""
    diag = only(loads("a: 1\nb: 2\na: 3\n", "m.yaml")[1])
    assert where(diag) == ("E008", 3, 1)
    related = [(r.span.line, r.span.col, r.message) for r in diag.related]
    assert related == [(1, 1, "first set here")]


def test_all_duplicate_keys_reported_sorted() -> None:
    """Several non-fatal problems are all reported, sorted by position."""
    diags = loads("a: 1\nb: {x: 1, x: 2}\na: 3\n", "m.yaml")[1]
    assert [where(d) for d in diags] == [("E008", 2, 11), ("E008", 3, 1)]


def test_repeated_values_are_the_same_values_and_each_bad_one_is_reported() -> None:
    """A plain scalar's value is remembered by its text: a repeat is the same value, and a
    repeat of a non-finite number is reported where it is too."""
    doc = ok("a: [5, 5, '5', 0x10, yes, null]\nb: {c: 5, d: 0x10, e: null, f: '5'}\n")
    assert doc.data == {
        "a": [5, 5, "5", 16, "yes", None],
        "b": {"c": 5, "d": 16, "e": None, "f": "5"},
    }
    diags = loads("a: [.nan, .nan]\nb: {c: .nan}\n", "m.yaml")[1]
    assert [where(d) for d in diags] == [("E015", 1, 5), ("E015", 1, 11), ("E015", 2, 8)]


def test_syntax_error_has_context_note() -> None:
    """A YAML syntax error keeps PyYAML's context as a related span."""
    diag = only(loads("a: [1\nb: 2\n", "m.yaml")[1])
    assert "did not find expected ',' or ']'" in diag.message
    related = [(r.span.line, r.message) for r in diag.related]
    assert related == [(1, "while parsing a flow sequence")]


def test_aliases_share_values() -> None:
    """Ordinary anchors and aliases work and build the value once."""
    doc = ok("a: &r {attempts: 2}\nb: *r\nc: &s x\nd: *s\n")
    assert doc.data["b"] == {"attempts": 2} and doc.data["b"] is doc.data["a"]
    assert doc.data["d"] == "x"


def billion_laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_fails_fast_with_bounded_memory() -> None:
    """A billion-laughs file is rejected quickly, without building the expansion."""
    tracemalloc.start()
    started = time.perf_counter()
    doc, diags = loads(billion_laughs(10), "bomb.yaml")
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert doc is None and where(only(diags))[0] == "E009"
    assert elapsed < 1.0 and peak < 20 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("a: " + "[" * 60_000 + "]" * 60_000, 1, 104),
        ("a:\n" + "- " * 60_000 + "x", 2, 201),
        ("a: " + "[" * 1_200_000 + "]" * 1_200_000, 1, 104),
        ("a: " + "[" * 1500 + "]" * 1500, 1, 104),
        ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 1200)), 102, 203),
    ],
)
def test_deep_nesting_never_overflows_the_stack(text: str, line: int, col: int) -> None:
    """Nesting far beyond the C stack's (and libyaml's own) limit is E011 at depth 101.

    The position is the same whichever path finds it (builder, pre-scan, or the pure-Python
    pre-scan after libyaml >= 0.2.6 stops at its 1000-level limit), on every PyYAML 6.0.x.
    """
    assert where(only(loads(text, "deep.yaml")[1])) == ("E011", line, col)


def test_libyaml_nesting_limit_becomes_e011() -> None:
    """libyaml 0.2.6's own limit (PyYAML 6.0.4) gives the same E011 as the depth pre-scan.

    The error is built exactly as libyaml 0.2.6 raises it, so this holds on libyaml 0.2.5 too.
    """
    text = "a: " + "[" * 1500 + "]" * 1500
    mark = yaml.Mark("<unicode string>", 1002, 0, 1002, None, None)
    error = yaml.scanner.ScannerError(
        "while increasing flow level", mark, "exceeded maximum nesting depth", mark
    )
    diag = nesting_error("deep.yaml", text, error)
    assert diag is not None and where(diag) == ("E011", 1, 104)
    other = yaml.scanner.ScannerError("while scanning", mark, "found unexpected end", mark)
    assert nesting_error("deep.yaml", text, other) is None


def test_moderate_flow_content_on_a_worker_thread() -> None:
    """Many flow collections (the worker-thread path) still load normally."""
    text = "services:\n" + "".join(f"  s{i}: {{on: [a, b], x: {{y: [1]}}}}\n" for i in range(3000))
    assert ok(text).data["services"]["s2999"] == {"on": ["a", "b"], "x": {"y": [1]}}


def test_size_limit() -> None:
    """Text over the size limit is rejected before parsing."""
    assert where(only(loads("#" * (MAX_BYTES + 1), "big.yaml")[1])) == ("E002", 1, 1)


def test_load_reads_files(tmp_path: Path) -> None:
    """load() reads UTF-8 (with or without BOM) and names the file as given."""
    path = tmp_path / "mesh.yaml"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\n")
    doc, diags = load(path)
    assert diags == [] and doc is not None
    assert doc.data == {"version": 1} and doc.name == str(path) and doc.path == path


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    """A missing file or a directory is E001 at FILE:1:1."""
    for path in (tmp_path / "nope.yaml", tmp_path):
        diag = only(load(path)[1])
        assert where(diag) == ("E001", 1, 1) and diag.span.file == str(path)


def test_non_utf8_points_at_the_byte(tmp_path: Path) -> None:
    """Invalid UTF-8 is reported at the offending byte's line and column."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nname: caf\xe9\n")
    diag = only(load(path)[1])
    assert where(diag) == ("E003", 2, 10) and "0xe9" in diag.message


def test_large_file_on_disk(tmp_path: Path) -> None:
    """load() enforces the size limit without reading the whole file."""
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(MAX_BYTES + 10)
    assert where(only(load(path)[1])) == ("E002", 1, 1)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(
        alphabet=st.sampled_from(list("ab:-[]{}&*!<>|'\"#,? \n\t\r~01.\x00\x85é\ud800")),
        max_size=60,
    )
)
def test_arbitrary_yamlish_text_never_raises(text: str) -> None:
    """Any text gives a Document xor at least one diagnostic; nothing escapes loads()."""
    doc, diags = loads(text, "fuzz.yaml")
    assert (doc is None) == bool(diags)
    for diag in diags:
        assert diag.span.line >= 1 and diag.span.col >= 1


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    """Fully random Unicode never escapes loads()."""
    doc, diags = loads(text, "fuzz.yaml")
    assert (doc is None) == bool(diags)


@settings(deadline=None, max_examples=100)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """Random bytes on disk never escape load()."""
    path = tmp_path_factory.mktemp("fuzz") / "mesh.yaml"
    path.write_bytes(data)
    doc, diags = load(path)
    assert (doc is None) == bool(diags)
