"""`meshgen explain`: the reasons it gives agree with the runtime's router for any request
(hypothesis), each failed condition is named, the listener is chosen as documented, and bad
input is a usage error (2), an invalid spec exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen import pipeline
from meshgen.cli import main
from meshgen.model import Mesh
from meshgen.plan import to_tables
from meshgen.review.explain import (
    CONNECTION_DENIED,
    TCP_FORWARDED,
    Request,
    RequestError,
    Trace,
    explain_request,
    parse_request,
)
from meshgen.review.explain_render import render_trace_text
from meshgen.runtime.codec.paths import split_target
from meshgen.runtime.policy.router import Router
from meshgen.runtime.policy.sni import SniRouter
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


# ---- tcp listeners: connections, not requests ------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CERTS = EXAMPLES / "mtls" / "certs"

TCP_SPEC = f"""\
version: 1
mesh: {{name: shop, domain: mesh.test}}
services:
  db:
    protocol: tcp
    discovery: {{static: [{{address: "127.0.0.1:7001"}}]}}
    failover: {{backup: db-dr}}
    health_check: {{tcp: {{}}}}
  db-dr: {{protocol: tcp, discovery: {{static: [{{address: "127.0.0.1:7002"}}]}}}}
  cache:
    protocol: tcp
    discovery:
      static:
        - {{address: "127.0.0.1:7003", labels: {{v: "1"}}}}
        - {{address: "127.0.0.1:7004", labels: {{v: "2"}}}}
    subsets: {{v2: {{labels: {{v: "2"}}}}}}
    idle_timeout: 30m
access:
  - {{from: billing, to: db}}
  - {{from: billing, to: db-dr}}
  - {{from: "*", to: cache}}
listeners:
  - name: split
    address: "127.0.0.1:16001"
    protocol: tcp
    to: [{{service: cache, weight: 75}}, {{service: cache, subset: v2, weight: 25}}]
  - name: db
    address: "127.0.0.1:16002"
    protocol: tcp
    to: [{{service: db}}]
    tls:
      cert: {CERTS}/mesh-edge.pem
      key: {CERTS}/mesh-edge-key.pem
      ca: {CERTS}/ca.pem
      client_certificates: optional
  - name: db-audit
    address: "127.0.0.1:16003"
    protocol: tcp
    to: [{{service: db}}]
    access: audit
    tls:
      cert: {CERTS}/mesh-edge.pem
      key: {CERTS}/mesh-edge-key.pem
      ca: {CERTS}/ca.pem
      client_certificates: required
  - name: sni
    address: "127.0.0.1:16004"
    protocol: tcp
    sni:
      db.mesh.test: db
      "*.mesh.test": cache
      "*.eu.mesh.test": db-dr
"""


def _load(tmp_path: Path, text: str) -> Loaded:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    mesh, diags = pipeline.load_mesh(path)
    assert mesh is not None, diags
    return mesh, to_tables(mesh)


@pytest.fixture(scope="module")
def tcp(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    return _load(tmp_path_factory.mktemp("tcp"), TCP_SPEC)


def _connect(loaded: Loaded, host: str, listener: str | None, caller: str | None = None) -> Trace:
    mesh, tables = loaded
    return explain_request(mesh, tables, parse_request(f"GET {host}", [], caller), listener)


def test_tcp_to_split_shares_endpoints_and_service_settings(tcp: Loaded) -> None:
    """Each destination with its weight and share of the connections, the endpoints its subset
    selects, and the service's connection settings only (no per-request policy)."""
    trace = _connect(tcp, "http://anything/", "split")
    assert trace.protocol == "tcp" and trace.routes == () and trace.path is None
    assert trace.outcome.startswith("forwarded: each connection to one destination")
    shares = [(b.service, b.subset, b.weight, b.share) for b in trace.branches]
    assert shares == [("cache", None, 75, 75.0), ("cache", "v2", 25, 25.0)]
    whole, v2 = trace.branches
    assert whole.endpoints == ("127.0.0.1:7003", "127.0.0.1:7004")
    assert v2.endpoints == ("127.0.0.1:7004",) and v2.subset_labels == "v: 2"
    assert whole.carries == "connections" and whole.policy == ()
    names = {s.name: s for s in whole.service_policy}
    assert names["idle_timeout"].value == "30m" and names["idle_timeout"].origin == "service"
    assert "timeout" not in names and "retries.per_try_timeout" not in names
    assert "circuit_breaker.max_connections" in names
    text = render_trace_text(trace)
    assert "destination cache/v2: weight 25 (25%)" in text and "per-request" not in text
    assert "404:" not in text and "path " not in text  # (the spec's folder may hold "404")


def test_tcp_backups_are_shown(tcp: Loaded) -> None:
    (branch,) = _connect(tcp, "http://x/", "db", "billing").branches
    assert branch.service == "db" and branch.backups == ("db-dr",)


@pytest.mark.parametrize(
    ("server_name", "pattern", "service"),
    [
        ("db.mesh.test", "db.mesh.test", "db"),  # exact beats every wildcard
        ("DB.mesh.test:443", "db.mesh.test", "db"),  # case and port do not matter
        ("a.eu.mesh.test", "*.eu.mesh.test", "db-dr"),  # the longest suffix wins
        ("x.a.eu.mesh.test", "*.eu.mesh.test", "db-dr"),  # at any depth
        ("web.mesh.test", "*.mesh.test", "cache"),
        ("mesh.test", None, None),  # a wildcard needs a label before its suffix
        ("other.test", None, None),
    ],
)
def test_sni_pattern_that_matched(
    tcp: Loaded, server_name: str, pattern: str | None, service: str | None
) -> None:
    trace = _connect(tcp, f"https://{server_name}/", "sni")
    matched = [t.pattern for t in trace.sni if t.matched]
    assert matched == ([pattern] if pattern else [])
    assert [t.pattern for t in trace.sni] == ["db.mesh.test", "*.eu.mesh.test", "*.mesh.test"]
    if service is None:
        assert trace.outcome == (
            "connection closed: no sni pattern matches (counted as sni_no_match)"
        )
        assert trace.branches == ()
        assert all(t.tried for t in trace.sni)
    else:
        assert [b.service for b in trace.branches] == [service]
        assert trace.outcome.startswith(f"passed through to {service}:")
        after = trace.sni[[t.pattern for t in trace.sni].index(pattern) + 1 :]
        assert not any(t.tried for t in after)


@given(st.lists(st.sampled_from(["db", "eu", "mesh", "test", "x", "DB"]), min_size=1, max_size=5))
def test_sni_reasons_agree_with_the_runtime(tcp: Loaded, labels: list[str]) -> None:
    """The pattern reported as matching is the runtime's SniRouter's answer, for any name."""
    _mesh, tables = tcp
    name = ".".join(labels)
    trace = _connect(tcp, f"https://{name}/", "sni")
    lst = next(x for x in tables.listeners if x.name == "sni")
    runtime = SniRouter(lst.sni).route(name)
    assert [b.service for b in trace.branches] == ([runtime] if runtime else [])
    assert [t.service for t in trace.sni if t.matched] == ([runtime] if runtime else [])


def test_tcp_access_by_identity(tcp: Loaded) -> None:
    """connection_denial's verdict: a caller must be allowed to every service the listener can
    reach, the failover backup included."""
    allowed = _connect(tcp, "http://x/", "db", "billing")
    assert allowed.access is not None and allowed.access.allowed
    assert allowed.access.reason == "allowed: billing may connect to db, db-dr"
    assert len(allowed.access.rules) == 2 and "to db-dr" in allowed.access.rules[1]
    denied = _connect(tcp, "http://x/", "db", "web")
    assert denied.access is not None and not denied.access.allowed
    assert denied.access.reason == "denied: no rule allows web to connect to db"
    assert denied.outcome == CONNECTION_DENIED and denied.branches
    assert [r.split(": ", 1)[1] for r in denied.access.rules] == ["from billing to db"]
    anonymous = _connect(tcp, "http://x/", "db")
    assert anonymous.outcome == CONNECTION_DENIED
    open_to_all = _connect(tcp, "http://x/", "split", "web")
    assert open_to_all.access is not None and not open_to_all.access.enforced


def test_tcp_audit_forwards_what_the_rules_deny(tcp: Loaded) -> None:
    trace = _connect(tcp, "http://x/", "db-audit", "web")
    assert trace.access is not None and not trace.access.allowed
    assert trace.outcome.startswith(TCP_FORWARDED)
    assert 'meshgen_denied_total{mode="audit"}' in trace.outcome
    assert _connect(tcp, "http://x/", "db-audit").outcome == "refused: the TLS handshake fails"


def test_an_http_request_goes_to_an_http_listener(tmp_path: Path) -> None:
    """Without --listener a tcp listener is chosen only when the mesh has no http listener,
    and explain says so."""
    mixed = (
        TCP_SPEC.replace(
            "listeners:\n",
            "routes: [{name: web, match: {host: web}, to: [{service: api}]}]\nlisteners:\n",
        ).replace(
            "services:\n",
            'services:\n  api: {discovery: {static: [{address: "127.0.0.1:7009"}]}}\n',
        )
        + '  - {name: edge, address: "127.0.0.1:16005"}\n'
    )
    loaded = _load(tmp_path, mixed)
    trace = _connect(loaded, "http://nothing/", None)
    assert trace.listener == "edge" and trace.outcome.startswith("404")
    tcp_only = _connect(_load(tmp_path, TCP_SPEC), "http://nothing/", None)
    assert tcp_only.listener == "split" and tcp_only.protocol == "tcp"
    assert "the mesh has no http listener" in tcp_only.listener_note


def test_tcp_example_cli_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(EXAMPLES / "tcp" / "mesh.yaml")
    args = ["explain", spec, "--request", "GET https://a.internal.mesh.test/"]
    assert main([*args, "--listener", "passthrough"]) == 0
    text = capsys.readouterr().out
    assert "sni       a.internal.mesh.test" in text
    assert "2. *.internal.mesh.test  " in text and "MATCH -> internal" in text
    assert main([*args, "--listener", "passthrough", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["protocol"] == "tcp" and data["server_name"] == "a.internal.mesh.test"
    assert [t["matched"] for t in data["sni"]] == [False, True]
    assert data["branches"][0]["service"] == "internal" and data["branches"][0]["weight"] is None
    assert main([*args, "--listener", "cache", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["branches"][0]["endpoints"] == ["127.0.0.1:6390"]
    assert data["branches"][0]["share"] == 100.0
