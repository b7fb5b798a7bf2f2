"""`meshgen explain`: the reasons it gives agree with the runtime's router for any request
(hypothesis), each failed condition is named, the listener is chosen as documented, and bad
input is a usage error (2), an invalid spec exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen import pipeline
from meshgen.cli import main
from meshgen.model import Mesh
from meshgen.plan import to_tables
from meshgen.review.explain import Request, RequestError, Trace, explain_request, parse_request
from meshgen.runtime.codec.paths import split_target
from meshgen.runtime.policy.router import Router
from meshgen.runtime.tables import Tables

Loaded = tuple[Mesh, Tables]

SPEC = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  api: {discovery: {static: [{address: "127.0.0.1:9001"}]}}
  beta: {discovery: {static: [{address: "127.0.0.1:9002"}]}}
routes:
  - {name: admin, match: {host: api, path_exact: /admin, methods: [POST]}, to: [{service: api}]}
  - name: api-v2
    match: {host: api, path_prefix: /api/v2, headers: {x-version: {exact: "2"}}}
    to: [{service: api}]
  - {name: items, match: {host: api, path_regex: "/items/[0-9]+"}, to: [{service: api}]}
  - name: beta
    match: {path_prefix: /, headers: {x-beta: {present: true}, x-user: {prefix: b}}}
    to: [{service: beta}]
  - {name: moved, match: {host: old}, redirect: {location: "http://api/", status: 308}}
listeners:
  - {name: edge, address: "127.0.0.1:15001"}
  - {name: internal, address: "127.0.0.1:15002", routes: [beta]}
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    path = tmp_path_factory.mktemp("explain") / "mesh.yaml"
    path.write_text(SPEC)
    mesh, diags = pipeline.load_mesh(path)
    assert mesh is not None, diags
    return mesh, to_tables(mesh)


@given(
    st.sampled_from(["GET", "POST", "DELETE"]),
    st.sampled_from(["api", "API:80", "api.", "old", "other"]),
    st.sampled_from(
        [
            "/",
            "/admin",
            "/admin/",
            "/api/v2",
            "/api/v2/x",
            "/x/../admin",
            "/items/7",
            "/items/7x",
            "/%61dmin",
            "/api/v2?x=1",
        ]
    ),
    st.dictionaries(
        st.sampled_from(["x-version", "x-beta", "x-user"]), st.sampled_from(["2", "3", "bob", "al"])
    ),
    st.sampled_from(["edge", "internal"]),
)
def test_reasons_agree_with_the_runtime_router(
    loaded: Loaded,
    method: str,
    host: str,
    path: str,
    headers: dict[str, str],
    listener: str,
) -> None:
    """A route is reported as matching exactly when the router's candidates and compiled
    predicates say so; the chosen route is Router.match's; later routes are not tried."""
    mesh, tables = loaded
    request = Request(method, path, (("host", host), *headers.items()))
    trace = explain_request(mesh, tables, request, listener)
    lst = next(x for x in tables.listeners if x.name == listener)
    router = Router.for_listener(tables.routes, lst)
    normalised = split_target(path)
    assert normalised is not None
    chosen = router.match(host, normalised[0], method, request.header)
    assert trace.route == (chosen.route.name if chosen else None)
    candidates = router.candidates(host)
    tried = [t for t in trace.routes if t.tried]
    for t, cr in zip(tried, router.routes, strict=False):
        runtime_says = cr in candidates and cr.matches(normalised[0], method, request.header)
        assert (not t.failed) == runtime_says, (t, cr.route.name)
    if chosen is not None:
        assert [t.name for t in tried][-1] == chosen.route.name
        assert all(t.failed for t in tried[:-1])
    else:
        assert len(tried) == len(trace.routes) and all(t.failed for t in tried)


def _trace(loaded: Loaded, text: str, *headers: str, listener: str = "edge") -> Trace:
    mesh, tables = loaded
    return explain_request(mesh, tables, parse_request(text, headers, None), listener)


def test_each_failed_condition_is_named(loaded: Loaded) -> None:
    trace = _trace(loaded, "GET http://api/admin", "x-beta: 1", "x-user: al")
    failed = {t.name: t.failed for t in trace.routes}
    assert failed["admin"] == ("method GET is not POST",)
    assert failed["api-v2"] == (
        "path /admin does not start with /api/v2",
        "header x-version is absent, not exact '2'",
    )
    assert failed["items"] == ("path /admin does not match /items/[0-9]+",)
    assert failed["beta"] == ("header x-user is 'al', not prefix 'b'",)
    assert failed["moved"] == ("host 'api' is not old",)
    assert trace.outcome == "404: no route for host 'api'"


def test_normalised_path_redirect_and_bad_target(loaded: Loaded) -> None:
    trace = _trace(loaded, "POST http://api/x/../%61dmin")
    assert trace.path == "/admin" and trace.route == "admin"
    assert (
        _trace(loaded, "GET http://old/a").outcome == "308 redirect to http://api/ (before access)"
    )
    bad = _trace(loaded, "GET http://api/%zz")
    assert bad.path is None and bad.outcome.startswith("400") and bad.routes == ()


def test_listener_choice(loaded: Loaded) -> None:
    """Without --listener: the first listener whose routes match (edge lists every route)."""
    mesh, tables = loaded
    beta = parse_request("GET http://x/", ["x-beta: 1", "x-user: bo"], None)
    assert explain_request(mesh, tables, beta).listener == "edge"
    assert explain_request(mesh, tables, beta, "internal").route == "beta"
    admin = parse_request("POST http://api/admin", [], None)
    assert explain_request(mesh, tables, admin, "internal").outcome.startswith("404")
    with pytest.raises(RequestError, match="no such listener"):
        explain_request(mesh, tables, admin, "nope")


@pytest.mark.parametrize(
    ("request_text", "headers", "message"),
    [
        ("GET", [], "write METHOD URL"),
        ("get http://api/", [], "write METHOD URL"),
        ("GET api/x", [], "absolute or start with /"),
        ("GET /x", [], "no host"),
        ("GET http://bad host/", [], "not valid"),
        ("GET /x", ["Host"], "write 'name: value'"),
    ],
)
def test_bad_requests_are_refused(request_text: str, headers: list[str], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_request(request_text, headers, None)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "mesh.yaml"
    spec.write_text(SPEC)
    assert main(["explain", str(spec), "--request", "GET http://api/items/3"]) == 0
    assert "3. items" in capsys.readouterr().out
    assert main(["explain", str(spec), "--request", "GET /x"]) == 2
    assert "no host" in capsys.readouterr().err
    assert main(["explain", str(spec), "--service", "nope"]) == 2
    assert "no such service" in capsys.readouterr().err
    assert main(["explain", str(spec)]) == 2  # neither --request nor --service
    capsys.readouterr()
    spec.write_text(SPEC.replace("to: [{service: beta}]", "to: [{service: btea}]"))
    assert main(["explain", str(spec), "--service", "api", "--diagnostics", "json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "btea" in captured.err
