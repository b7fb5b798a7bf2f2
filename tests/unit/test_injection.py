"""No user string can carry a line break or control character into HTTP heads or HAProxy config.

A full spec (``BASE``) builds; putting CR, LF, NUL or DEL into any field that reaches the
runtime or a generated file -- header names and values, hosts, paths, redirect locations, TLS
names and files, hash keys, DNS names, labels, zones, alert conditions -- must fail the build
with exit 1 and a diagnostic at that value, never produce DIST. Only an alert's ``summary`` is
free text, and it survives quotes, newlines and emoji intact.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.cli import main
from meshgen.diagnostics import Diagnostic
from meshgen.pipeline import Result, compile_spec
from meshgen.source import loads

PathKey = tuple[str | int, ...]

BASE: dict[str, Any] = {
    "version": 1,
    "mesh": {"name": "shop", "domain": "mesh.test"},
    "defaults": {"timeout": "10s", "tls": {"ca": "ca.pem"}},
    "services": {
        "reviews": {
            "discovery": {
                "static": [
                    {"address": "127.0.0.1:9081", "zone": "a", "labels": {"version": "v1"}},
                    {"address": "127.0.0.1:9082", "zone": "b", "labels": {"version": "v2"}},
                ]
            },
            "subsets": {"v1": {"labels": {"version": "v1"}}, "v2": {"labels": {"version": "v2"}}},
            "load_balancer": {"policy": "ring_hash", "hash_on": {"header": "x-user"}},
            "health_check": {"http": {"path": "/healthz"}, "interval": "5s", "timeout": "1s"},
            "failover": {"zones": ["a", "b"]},
            "timeout": "15s",
            "tls": {
                "mode": "mutual",
                "cert": "client.pem",
                "key": "client-key.pem",
                "sni": "reviews.mesh.test",
                "subject_alt_names": ["spiffe://shop/reviews"],
            },
        },
        "ratings": {
            "discovery": {"dns": {"name": "ratings.mesh.test", "type": "A", "port": 9080}},
            "load_balancer": {"policy": "maglev", "hash_on": {"cookie": "session"}},
        },
    },
    "routes": [
        {
            "name": "reviews-jason",
            "match": {
                "host": "reviews.mesh.test",
                "path_prefix": "/api/",
                "headers": {
                    "end-user": {"exact": "jason"},
                    "x-tenant": {"prefix": "acme"},
                    "x-trace": {"regex": "[0-9a-f]+"},
                },
            },
            "to": [{"service": "reviews", "subset": "v2"}],
            "rewrite": {"path_prefix": "/v2/", "host": "reviews.internal"},
            "headers": {
                "request": {"set": {"x-env": "prod"}, "remove": ["x-debug"]},
                "response": {"set": {"x-served-by": "meshgen"}, "remove": ["server"]},
            },
        },
        {
            "name": "old",
            "match": {"path_exact": "/old"},
            "redirect": {"location": "https://new.example/", "status": 301},
        },
        {
            "name": "ratings",
            "match": {"path_regex": "/ratings/[0-9]+"},
            "to": [{"service": "ratings"}],
        },
    ],
    "listeners": [
        {
            "name": "edge",
            "address": "127.0.0.1:0",
            "tls": {
                "cert": "edge.pem",
                "key": "edge-key.pem",
                "ca": "ca.pem",
                "client_certificates": "optional",
            },
        }
    ],
    "access": [
        {"from": "*", "to": "reviews", "paths": ["/api/"]},
        {"from": "*", "to": "ratings"},
    ],
    "monitoring": {
        "alerts": [
            {
                "name": "reviews-errors",
                "service": "reviews",
                "when": "error_rate > 5%",
                "for": "2m",
                "summary": "reviews is failing",
            }
        ],
        "alertmanager": "http://127.0.0.1:9093",
    },
}

VALUES: list[PathKey] = [
    ("mesh", "domain"),
    ("defaults", "tls", "ca"),
    ("services", "reviews", "discovery", "static", 0, "zone"),
    ("services", "reviews", "discovery", "static", 0, "labels", "version"),
    ("services", "reviews", "subsets", "v1", "labels", "version"),
    ("services", "reviews", "load_balancer", "hash_on", "header"),
    ("services", "reviews", "health_check", "http", "path"),
    ("services", "reviews", "failover", "zones", 0),
    ("services", "reviews", "timeout"),
    ("services", "reviews", "tls", "cert"),
    ("services", "reviews", "tls", "key"),
    ("services", "reviews", "tls", "sni"),
    ("services", "reviews", "tls", "subject_alt_names", 0),
    ("services", "ratings", "discovery", "dns", "name"),
    ("services", "ratings", "load_balancer", "hash_on", "cookie"),
    ("routes", 0, "name"),
    ("routes", 0, "match", "host"),
    ("routes", 0, "match", "path_prefix"),
    ("routes", 0, "match", "headers", "end-user", "exact"),
    ("routes", 0, "match", "headers", "x-tenant", "prefix"),
    ("routes", 0, "match", "headers", "x-trace", "regex"),
    ("routes", 0, "rewrite", "path_prefix"),
    ("routes", 0, "rewrite", "host"),
    ("routes", 0, "headers", "request", "set", "x-env"),
    ("routes", 0, "headers", "request", "remove", 0),
    ("routes", 0, "headers", "response", "set", "x-served-by"),
    ("routes", 0, "headers", "response", "remove", 0),
    ("routes", 1, "match", "path_exact"),
    ("routes", 1, "redirect", "location"),
    ("routes", 2, "match", "path_regex"),
    ("listeners", 0, "address"),
    ("listeners", 0, "tls", "cert"),
    ("listeners", 0, "tls", "key"),
    ("listeners", 0, "tls", "ca"),
    ("access", 0, "paths", 0),
    ("monitoring", "alerts", 0, "when"),
    ("monitoring", "alertmanager"),
]
KEYS: list[PathKey] = [
    ("services", "reviews", "discovery", "static", 0, "labels", "version"),
    ("services", "reviews", "subsets", "v1"),
    ("routes", 0, "match", "headers", "end-user"),
    ("routes", 0, "headers", "request", "set", "x-env"),
    ("routes", 0, "headers", "response", "set", "x-served-by"),
]
BAD = ["\r\n", "\n", "\r", "\x00", "\x7f", "\r\nSet-Cookie: evil=2",
       "\nserver evil 6.6.6.6:80", "\x1b[31m", "\u2028"]  # fmt: skip


@pytest.fixture(scope="module")
def spec_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the TLS files BASE names (existence is all a build checks)."""
    path = tmp_path_factory.mktemp("injection")
    for name in ("ca.pem", "client.pem", "client-key.pem", "edge.pem", "edge-key.pem"):
        (path / name).write_text("-----BEGIN PLACEHOLDER-----\n", encoding="utf-8")
        os.chmod(path / name, 0o600)
    return path


def build(data: dict[str, Any], folder: Path, name: str = "mesh.yaml") -> tuple[Path, Result]:
    spec = folder / name
    spec.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return spec, compile_spec(spec)


def parent_of(data: Any, path: PathKey) -> Any:
    for step in path[:-1]:
        data = data[step]
    return data


def errors(result: Result) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.severity == "error"]


def test_base_spec_builds(spec_folder: Path) -> None:
    """BASE is a full spec that builds; every field below is injected into a working spec."""
    _, result = build(BASE, spec_folder, "base.yaml")
    assert result.ok and errors(result) == [], result.diagnostics
    for path in VALUES + KEYS:
        parent_of(BASE, path)[path[-1]]  # every path exists


@settings(deadline=None, max_examples=300, derandomize=True)
@given(
    path=st.sampled_from(VALUES),
    bad=st.sampled_from(BAD),
    at=st.sampled_from(["end", "start", "middle"]),
)
def test_control_characters_in_values_fail_the_build(
    spec_folder: Path, path: PathKey, bad: str, at: str
) -> None:
    """CR/LF/NUL/DEL/ESC/U+2028 anywhere in any such value: no DIST, an error at that value."""
    data = copy.deepcopy(BASE)
    parent = parent_of(data, path)
    good = str(parent[path[-1]])
    middle = len(good) // 2
    parent[path[-1]] = {"end": good + bad, "start": bad + good,
                        "middle": good[:middle] + bad + good[middle:]}[at]  # fmt: skip
    spec, result = build(data, spec_folder)
    assert not result.ok and result.files is None
    found = errors(result)
    assert found, result.diagnostics
    doc, _ = loads(spec.read_text(encoding="utf-8"), str(spec))
    assert doc is not None
    assert any(d.span == doc.span(path) for d in found), (path, found)


@settings(deadline=None, max_examples=100, derandomize=True)
@given(path=st.sampled_from(KEYS), bad=st.sampled_from(BAD))
def test_control_characters_in_keys_fail_the_build(
    spec_folder: Path, path: PathKey, bad: str
) -> None:
    """The same in mapping keys (header names, label names, subset names): error at the key."""
    data = copy.deepcopy(BASE)
    parent = parent_of(data, path)
    parent[str(path[-1]) + bad] = parent.pop(path[-1])
    spec, result = build(data, spec_folder)
    assert not result.ok
    doc, _ = loads(spec.read_text(encoding="utf-8"), str(spec))
    assert doc is not None
    renamed = (*path[:-1], str(path[-1]) + bad)
    assert any(d.span == doc.key_span(renamed) for d in errors(result)), errors(result)


def test_the_audit_cases_exit_1_with_e115(
    spec_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two audit findings: a Set-Cookie smuggled into a header value, and a HAProxy line."""
    data = copy.deepcopy(BASE)
    data["routes"][0]["headers"]["response"]["set"]["x-served-by"] = "v\r\nSet-Cookie: evil=2"
    data["services"]["reviews"]["tls"]["subject_alt_names"] = [
        "spiffe://shop/reviews\nserver evil 6.6.6.6:80"
    ]
    spec, _ = build(data, spec_folder)
    out = spec_folder / "dist-audit"
    assert main(["build", str(spec), "-o", str(out)]) == 1
    printed = capsys.readouterr()
    assert printed.err.count("error[E115]") == 2, printed
    assert "carriage return (U+000D)" in printed.err and "line feed (U+000A)" in printed.err
    assert not out.exists()


def test_tab_is_allowed_in_header_values_only_where_the_rfc_allows(spec_folder: Path) -> None:
    """HTAB is legal inside a header value (RFC 9110) but not in a header name or a path."""
    data = copy.deepcopy(BASE)
    data["routes"][0]["headers"]["response"]["set"]["x-served-by"] = "mesh\tgen"
    assert build(data, spec_folder)[1].ok
    data["routes"][0]["headers"]["response"]["remove"] = ["x\ty"]
    assert [d.code for d in errors(build(data, spec_folder)[1])] == ["E110"]


def test_summary_is_free_text(spec_folder: Path) -> None:
    """Quotes, newlines, backslashes and emoji in a summary build and reach the alert rules."""
    summary = "reviews said \"no\" 'twice'\nsee C:\\runbook\r\n\tthen page 🚨 — ok"
    data = copy.deepcopy(BASE)
    data["monitoring"]["alerts"][0]["summary"] = summary
    _, result = build(data, spec_folder)
    assert result.ok and result.files is not None, result.diagnostics
    rules = [
        yaml.safe_load(text)
        for name, text in result.files.items()
        if name.endswith((".yml", ".yaml")) and "summary" in text
    ]
    annotations = [
        rule.get("annotations", {})
        for file in rules
        if isinstance(file, dict)
        for group in file.get("groups", [])
        for rule in group.get("rules", [])
    ]
    assert any(a.get("summary") == summary for a in annotations), annotations


@pytest.mark.parametrize(
    "rate", [float("nan"), float("inf"), -float("inf"), 10**400], ids=["nan", "inf", "-inf", "huge"]
)
def test_non_finite_numbers_exit_1(
    spec_folder: Path, rate: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """`.nan`, `.inf` and numbers beyond a float are E015 (exit 1), not an internal error."""
    data = copy.deepcopy(BASE)
    data["services"]["reviews"]["rate_limit"] = {"requests_per_second": rate}
    spec, _ = build(data, spec_folder)
    assert main(["validate", str(spec)]) == 1
    assert "error[E015]" in capsys.readouterr().err
