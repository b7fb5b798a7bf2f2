"""A value of the wrong shape is explained in words: no diagnostic ever shows a raw regex.

Every ``pattern`` in the schema is either one of the named shapes below (each placed in a
real field here, with a value that breaks it) or only excludes control characters (E115 reports
those). A new pattern without a row here fails the first test, so it gets one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from meshgen.resources import schema_path
from meshgen.schema import validate
from meshgen.source import loads

SCHEMA: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
CONTROL_ONLY = {SCHEMA["$defs"][n]["pattern"] for n in ("text", "file", "header_value")}

BASE = "version: 1\nmesh: {name: shop, domain: mesh.test}\n"
SERVICE = "services: {a: {discovery: {static: [{address: '127.0.0.1:1'}]}%s}}\n"
CASES: dict[str, str] = {
    # $defs shape: a document whose one mistake is a value of that shape
    "name": BASE + SERVICE % "" + "routes: [{name: Bad_Route, to: [{service: a}]}]\n",
    "duration": BASE + SERVICE % ", timeout: 1.5s",
    "address": BASE + SERVICE % "" + "admin: 'localhost'\n",
    "hostname": "version: 1\nmesh: {name: shop, domain: 'mesh test'}\n" + SERVICE % "",
    "token": BASE + SERVICE % ", load_balancer: {policy: ring_hash, hash_on: {header: 'x user'}}",
    "host": BASE + SERVICE % "" + "routes: [{name: r, match: {host: 'a/b'}, to: [{service: a}]}]\n",
    "server_name": BASE + SERVICE % ", tls: {mode: simple, sni: 'a/b'}",
    "uri": BASE + SERVICE % "" + "routes: [{name: r, redirect: {location: 'a b'}}]\n",
    "sni_pattern": BASE
    + SERVICE % ", protocol: tcp"
    + "listeners: [{name: p, address: '127.0.0.1:0', protocol: tcp, sni: {'API.test': a}}]\n",
    "grpc_name": BASE + SERVICE % ", health_check: {grpc: {service: 'a/b'}}",
    "url_path": BASE + SERVICE % ", health_check: {http: {path: healthz}}",
    "http_url": BASE + SERVICE % "" + "monitoring: {alertmanager: 'ftp://am'}\n",
}


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


def test_every_pattern_has_a_case_or_only_excludes_control_characters() -> None:
    covered = {SCHEMA["$defs"][name]["pattern"] for name in CASES} | CONTROL_ONLY
    uncovered = sorted(set(_patterns(SCHEMA)) - covered)
    assert uncovered == [], (
        "patterns without a worded rule in meshgen/schema.py and a case here (move the pattern "
        f"to a $defs shape): {uncovered}"
    )


@pytest.mark.parametrize("shape", sorted(CASES))
def test_a_wrong_shape_is_explained_without_the_pattern(shape: str) -> None:
    doc, problems = loads(CASES[shape], "mesh.yaml")
    assert doc is not None and problems == []
    diags = validate(doc)
    assert len(diags) == 1, [d.message for d in diags]
    shown = f"{diags[0].message} {diags[0].hint or ''}"
    assert SCHEMA["$defs"][shape]["pattern"] not in shown
    assert not re.search(r"\[\^|\\x[0-9a-f]|\{\d+,\d*\}|\]\+|\]\*|\$\s*$", shown), shown
    assert "expected" in shown or "must" in shown or "not allowed" in shown, shown
