"""YAML mistakes in meshgen's words: tabs, unquoted IPv6, misaligned list items, and the
schema's hints for a field one level too deep, a quoted version and an IPv6 read as a list."""

from __future__ import annotations

import pytest

from meshgen.diagnostics import Diagnostic
from meshgen.schema import validate
from meshgen.source import loads

HEAD = "version: 1\nmesh: {name: shop}\nservices:\n  reviews:\n    discovery:\n      static:\n"


def _only(text: str) -> Diagnostic:
    doc, diags = loads(text, "mesh.yaml")
    if doc is not None:
        diags = validate(doc)
    (diag,) = diags
    return diag


@pytest.mark.parametrize("where", ["\t- address: 127.0.0.1:1\n", "  \t- address: 127.0.0.1:1\n"])
def test_a_tab_in_indentation(where: str) -> None:
    diag = _only(HEAD + where)
    assert (diag.code, diag.message) == ("E004", "tabs are not allowed for indentation")
    assert (diag.span.line, diag.span.col) == (7, where.index("\t") + 1)
    assert diag.hint is not None and "spaces" in diag.hint


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("        - address: [::1]:9081\n", "[::1]:9081"),
        ("        - {address: [fe80::1]:80, weight: 2}\n", "[fe80::1]:80"),
    ],
)
def test_an_unquoted_ipv6_address(line: str, value: str) -> None:
    diag = _only(HEAD + line)
    assert diag.code == "E004"
    assert diag.message == f"{value} must be quoted: an unquoted '[' starts a YAML list"
    assert diag.hint == f'quote an IPv6 address: "{value}"'
    assert diag.span.col == line.index("[") + 1
    assert diag.span.end_col - diag.span.col == len(value)


def test_a_quoted_ipv6_address_is_fine() -> None:
    doc, diags = loads(HEAD + '        - address: "[::1]:9081"\n', "mesh.yaml")
    assert doc is not None and diags == [] and validate(doc) == []


@pytest.mark.parametrize("indent", [7, 9])
def test_a_misaligned_list_item_is_named_with_its_list(indent: int) -> None:
    text = HEAD + "        - address: 127.0.0.1:1\n" + " " * indent + "- address: 127.0.0.1:2\n"
    diag = _only(text)
    assert diag.code == "E004"
    assert diag.message == (
        f"list item '- address: 127.0.0.1:2' of 'static' is indented {indent} spaces, but the "
        "item before it 8"
    )
    assert (diag.span.line, diag.span.col) == (8, indent + 1)
    assert [(r.span.line, r.span.col) for r in diag.related] == [(7, 9)]
    assert diag.hint == (
        "items of one list start in the same column: indent it like "
        "'- address: 127.0.0.1:1' (line 7)"
    )


def test_other_syntax_errors_keep_the_parser_words() -> None:
    diag = _only(HEAD + "        - address: 127.0.0.1:1\nroutes: [\n")
    assert diag.code == "E004" and diag.message.startswith("invalid YAML: ")


def test_a_field_one_level_too_deep_says_where_it_belongs() -> None:
    diag = _only(HEAD + "        - address: 127.0.0.1:1\n      health_check: {tcp: {}}\n")
    assert (diag.code, diag.message) == ("E101", "unknown field 'health_check' in 'discovery'")
    assert diag.hint == (
        "'health_check' belongs under a service ('reviews'), not under 'discovery': indent it "
        "like 'discovery'"
    )
    service = "services: {a: {discovery: {static: [{address: 1.2.3.4:1}]}}}\n"
    top = _only("version: 1\nmesh: {name: shop, services: {}}\n" + service)
    assert (
        top.hint
        == "'services' belongs under the top level, not under 'mesh': indent it like 'mesh'"
    )


def test_a_misspelled_field_still_gets_did_you_mean() -> None:
    diag = _only(HEAD + "        - address: 127.0.0.1:1\n    helth_check: {tcp: {}}\n")
    assert diag.hint == "did you mean 'health_check'?"


def test_version_written_as_a_string() -> None:
    diag = _only(HEAD.replace("version: 1", 'version: "1"') + "        - address: 127.0.0.1:1\n")
    assert (diag.code, diag.message) == ("E112", 'version "1" is a string: write 1, not "1"')


def test_an_ipv6_address_yaml_read_as_a_list() -> None:
    diag = _only(HEAD + "        - address: [fe80::1]\n")
    assert diag.code == "E105"
    assert diag.hint == 'quote an IPv6 address: "[fe80::1]" (unquoted, [ ] make a YAML list)'
