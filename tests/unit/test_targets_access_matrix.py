"""DIST/access/matrix.txt: the allow matrix, exactly as the runtime decides requests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen import targets
from meshgen.plan import to_tables
from meshgen.runtime.policy.access import AccessPolicy
from meshgen.runtime.tables import Tables
from meshgen.targets import access_matrix
from tests.unit.h2_mesh import mesh_of

CTX = targets.make_context("mesh.yaml", "0.0.0")

MESH = """
services:
  pay: {discovery: {static: [{address: 127.0.0.1:1}]}, failover: {backup: pay-dr}}
  pay-dr: {discovery: {static: [{address: 127.0.0.1:2}]}}
  catalog: {discovery: {static: [{address: 127.0.0.1:3}]}}
routes:
  - {name: charge, match: {host: pay}, to: [{service: pay}]}
  - {name: catalog, match: {host: catalog}, to: [{service: catalog}]}
  - {name: moved, match: {host: old}, redirect: {location: https://new/}}
listeners:
  - name: mtls
    address: 127.0.0.1:0
    routes: [charge, catalog, moved]
    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null, client_certificates: required}
  - name: partners
    address: 127.0.0.1:0
    routes: [catalog]
    tls: {cert: /dev/null, key: /dev/null, ca: /dev/null, client_certificates: optional}
  - {name: plain, address: 127.0.0.1:0, routes: [catalog]}
access:
  - {from: web, to: pay, methods: [POST], paths: [/charge]}
  - {from: web, to: pay-dr, methods: [POST, PUT], paths: [/]}
  - {from: web, to: catalog, methods: [GET, HEAD]}
  - {from: '*', to: catalog, methods: [GET], paths: [/public/]}
"""


def tables(text: str = MESH) -> Tables:
    return to_tables(mesh_of(text))


def rows(text: str = MESH) -> list[list[str]]:
    out = access_matrix.render(tables(text), CTX)[access_matrix.PATH]
    return [line.split() for line in out.splitlines() if not line.startswith("#")]


def test_rows_per_checking_listener_route_and_caller() -> None:
    """Only listeners that check callers; grants met over target and backup; redirects denied."""
    assert rows() == [
        ["listener", "route", "caller", "methods", "paths", "services"],
        ["mtls", "charge", "web", "POST", "/charge", "pay,pay-dr"],
        ["mtls", "charge", "*", "-", "-", "pay,pay-dr"],
        ["mtls", "catalog", "web", "GET,HEAD", "/", "catalog"],
        ["mtls", "catalog", "*", "GET", "/public/", "catalog"],
        ["mtls", "moved", "*", "-", "-", "(redirect)"],
        ["partners", "catalog", "web", "GET,HEAD", "/", "catalog"],
        ["partners", "catalog", "*", "GET", "/public/", "catalog"],
    ]


def test_header_names_the_generator_and_the_listeners() -> None:
    text = access_matrix.render(tables(), CTX)[access_matrix.PATH]
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert head[0] == f"# {CTX.header}"
    assert "mtls (required), partners (optional)" in "\n".join(head)


def test_no_file_without_a_listener_that_checks_callers() -> None:
    plain = MESH.split("listeners:")[0] + "listeners:\n  - {name: plain, address: 127.0.0.1:0}\n"
    assert access_matrix.render(tables(plain), CTX) == {}


def test_any_method_is_a_star() -> None:
    text = MESH.replace("methods: [GET, HEAD]}", "paths: [/]}")
    assert ["mtls", "catalog", "web", "*", "/", "catalog"] in rows(text)


def test_deterministic() -> None:
    assert access_matrix.render(tables(), CTX) == access_matrix.render(tables(), CTX)


def test_registered_as_a_target() -> None:
    runtime = next(t for t in targets.registered() if t.name == "runtime")
    assert access_matrix.render in runtime.renders


@settings(deadline=None, max_examples=200, derandomize=True)
@given(
    route=st.sampled_from(("charge", "catalog", "moved")),
    caller=st.sampled_from(("web", "api")),
    method=st.sampled_from(("GET", "HEAD", "POST", "PUT")),
    path=st.sampled_from(("/", "/charge", "/charge/1", "/chargeback", "/public/x", "/public")),
)
def test_matrix_says_what_the_runtime_decides(
    route: str, caller: str, method: str, path: str
) -> None:
    """A request is allowed iff a row of its route for the caller (else '*') permits it."""
    table = rows()[1:]
    named = [r for r in table if r[0] == "mtls" and r[1] == route and r[2] == caller]
    mine = named or [r for r in table if r[0] == "mtls" and r[1] == route and r[2] == "*"]

    def permits(row: list[str]) -> bool:
        methods, prefix = row[3], row[4]
        if methods == "-":
            return False
        ok_method = methods == "*" or method in methods.split(",")
        under = path == prefix or path.startswith(prefix.rstrip("/") + "/")
        return ok_method and under

    runtime = AccessPolicy.from_tables(tables())
    assert runtime.route_allowed(route, caller, method, path) == any(permits(r) for r in mine)
