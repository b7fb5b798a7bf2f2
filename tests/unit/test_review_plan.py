"""`meshgen plan OLD NEW`: every kind of change, where it was written, the exit codes, DIST
sides (read without running their code), overlays, stdin, and output that user text cannot
break."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from meshgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/mesh.yaml"))


class Plan:
    """A copy of one example to edit: ``plan(edits)`` runs ``meshgen plan`` old -> edited."""

    def __init__(self, tmp_path: Path, example: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.folder = tmp_path / example
        shutil.copytree(ROOT / "examples" / example, self.folder)
        self.old = self.folder / "mesh.yaml"
        self.new = self.folder / "new.yaml"
        self.text = self.old.read_text()
        self.capsys = capsys

    def edited(self, *edits: tuple[str, str]) -> str:
        text = self.text
        for before, after in edits:
            assert before in text, before
            text = text.replace(before, after, 1)
        return text

    def run(self, *edits: tuple[str, str], args: tuple[str, ...] = ()) -> tuple[int, str]:
        """Exit code and stdout (stderr kept in ``self.err``)."""
        self.new.write_text(self.edited(*edits))
        self.capsys.readouterr()
        code = main(["plan", str(self.old), str(self.new), *args])
        out, self.err = self.capsys.readouterr()
        return code, out

    def lines(self, *edits: tuple[str, str]) -> list[str]:
        """The change lines (without ``(FILE:LINE)``), exit code 3 asserted."""
        code, out = self.run(*edits)
        assert code == 3, out
        return [line.split("  (", 1)[0] for line in out.splitlines()[:-2]]


@pytest.fixture
def canary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Plan:
    return Plan(tmp_path, "canary", capsys)


def test_no_difference_exits_0(canary: Plan) -> None:
    code, out = canary.run()
    assert code == 0
    assert out == f"{canary.old} -> {canary.new}: no changes\n"


def test_route_weights_and_mirror(canary: Plan) -> None:
    assert canary.lines(
        ("weight: 90}", "weight: 50}"),
        ("weight: 10}", "weight: 50}"),
        ("percent: 5}", "percent: 20}"),
    ) == [
        "route reviews-split: to reviews/v1 weight 90 -> 50",
        "route reviews-split: to reviews/v3 weight 10 -> 50",
        "route reviews-split: mirror.percent 5% -> 20%",
    ]


def test_route_matches(canary: Plan) -> None:
    assert canary.lines(
        ("{exact: jason}", "{prefix: ja}"),
        (
            "      path_prefix: /\n    to:\n      - {service: reviews, subset: v1",
            "      path_exact: /reviews\n      methods: [GET]\n    to:\n"
            "      - {service: reviews, subset: v1",
        ),
    ) == [
        "route reviews-jason: match.headers.end-user exact jason -> prefix ja",
        "route reviews-split: match.path_prefix removed (was /)",
        "route reviews-split: match.path_exact added (/reviews)",
        "route reviews-split: match.methods added ([GET])",
    ]


def test_route_policies(canary: Plan) -> None:
    assert canary.lines(
        (
            "    mirror:",
            "    timeout: 1s\n    fault: {abort: {status: 503, percent: 10}}\n    mirror:",
        ),
        ("{set: {x-served-by: meshgen}}", "{set: {x-served-by: mesh}, remove: [server]}"),
    ) == [
        "route reviews-split: to reviews/v1 timeout added (1s)",
        "route reviews-split: to reviews/v3 timeout added (1s)",
        "route reviews-split: fault added (abort.status 503, abort.percent 10%)",
        "route reviews-split: headers.response.set.x-served-by meshgen -> mesh",
        "route reviews-split: headers.response.remove added ([server])",
    ]


def test_routes_added_removed_and_reordered(canary: Plan) -> None:
    jason_start = canary.text.index("  - name: reviews-jason")
    split_start = canary.text.index("  - name: reviews-split")
    end = canary.text.index("listeners:")
    jason = canary.text[jason_start:split_start]
    split = canary.text[split_start:end]
    assert canary.lines((jason + split, split + jason)) == [
        "routes: order reviews-jason, reviews-split -> reviews-split, reviews-jason"
    ]
    new_route = jason.replace("reviews-jason", "reviews-beta").replace("jason", "beta")
    assert canary.lines((jason, new_route + jason)) == [
        "listener edge: routes [reviews-jason, reviews-split] -> "
        "[reviews-beta, reviews-jason, reviews-split]",
        "route reviews-beta: added (tried before reviews-jason)",
    ]
    assert canary.lines((jason, "")) == [
        "listener edge: routes [reviews-jason, reviews-split] -> [reviews-split]",
        "route reviews-jason: removed",
    ]


def test_endpoints_and_subsets(canary: Plan) -> None:
    assert canary.lines(
        (
            "        - {address: 127.0.0.1:9084, labels: {version: v3}}",
            "        - {address: 10.0.0.7:80, labels: {version: v3}, zone: b, weight: 3}",
        ),
        (
            "{address: 127.0.0.1:9082, labels: {version: v1}}",
            "{address: 127.0.0.1:9082, labels: {version: v1, canary: 'yes'}}",
        ),
        ("v2: {labels: {version: v2}}", "v2: {labels: {version: v2, tier: gold}}"),
    ) == [
        "service reviews: endpoint 127.0.0.1:9082 labels {version: v1} -> "
        "{canary: yes, version: v1}",
        "service reviews: endpoint 127.0.0.1:9084 removed",
        "service reviews: endpoint 10.0.0.7:80 added (weight 3, zone b, labels {version: v3})",
        "service reviews: subset v2 labels {version: v2} -> {tier: gold, version: v2}",
    ]


def test_service_policies_and_defaults(canary: Plan) -> None:
    assert canary.lines(
        ("  timeout: 10s\n", "  timeout: 3s\n  circuit_breaker: {max_requests: 100}\n"),
        ("      interval: 5s\n", "      interval: 2s\n"),
        (
            "    subsets:",
            "    load_balancer: {policy: ring_hash, hash_on: {header: x-user}}\n"
            "    outlier_detection: {consecutive_5xx: 2}\n"
            "    rate_limit: {requests_per_second: 50, burst: 100}\n    subsets:",
        ),
    ) == [
        "service reviews: load_balancer.policy round_robin -> ring_hash",
        "service reviews: load_balancer.hash_on added (header x-user)",
        "service reviews: health_check.interval 5s -> 2s",
        "service reviews: outlier_detection added (consecutive_5xx 2, interval 10s, "
        "base_ejection_time 30s, max_ejection_percent 10%)",
        "service reviews: circuit_breaker.max_requests 1024 -> 100",
        "service reviews: timeout 10s -> 3s",
        "service reviews: rate_limit added (requests_per_second 50, burst 100)",
    ]


def test_where_points_at_the_line_that_wrote_the_value(canary: Plan) -> None:
    """A `defaults:` value is located in `defaults:`, a weight at its `to` entry, a removed
    endpoint in the old file."""
    code, out = canary.run(
        ("  timeout: 10s\n", "  timeout: 3s\n"),
        ("weight: 10}", "weight: 50}"),
        ("weight: 90}", "weight: 50}"),
        ("        - {address: 127.0.0.1:9084, labels: {version: v3}}\n", ""),
    )
    assert code == 3
    new_lines = canary.new.read_text().splitlines()
    old_lines = canary.old.read_text().splitlines()
    located = dict(line.rsplit("  (", 1) for line in out.splitlines()[:-2])

    def line_of(where: str) -> str:
        file, number = where.rstrip(")").rsplit(":", 1)
        return (new_lines if file == str(canary.new) else old_lines)[int(number) - 1].strip()

    assert line_of(located["service reviews: timeout 10s -> 3s"]) == "timeout: 3s"
    weight = located["route reviews-split: to reviews/v3 weight 10 -> 50"]
    assert line_of(weight) == "- {service: reviews, subset: v3, weight: 50}"
    removed = located["service reviews: endpoint 127.0.0.1:9084 removed"]
    assert removed.startswith(str(canary.old))
    assert line_of(removed) == "- {address: 127.0.0.1:9084, labels: {version: v3}}"


def test_listeners(canary: Plan) -> None:
    assert canary.lines(
        (
            "    address: 127.0.0.1:15001\n",
            "    address: 127.0.0.1:15002\n    routes: [reviews-split]\n"
            "    limits: {max_connections: 100}\n"
            "  - name: internal\n    address: 127.0.0.1:15003\n",
        ),
    ) == [
        "listener edge: address 127.0.0.1:15001 -> 127.0.0.1:15002",
        "listener edge: routes [reviews-jason, reviews-split] -> [reviews-split]",
        "listener edge: limits.max_connections 10000 -> 100",
        "listener internal: added",
    ]


def test_mesh_fields(canary: Plan) -> None:
    assert canary.lines(("admin: 127.0.0.1:15000", "admin: 127.0.0.1:15100")) == [
        "mesh: admin 127.0.0.1:15000 -> 127.0.0.1:15100"
    ]


@pytest.fixture
def mtls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Plan:
    plan = Plan(tmp_path, "mtls", capsys)
    for key in plan.folder.glob("certs/*-key.pem"):
        key.chmod(0o600)
    return plan


def test_access_verdicts(mtls: Plan) -> None:
    """Rules are compared by what they allow: each flip names caller, service, method, path."""
    assert mtls.lines(
        (
            "  - {from: frontend, to: payments, methods: [POST], paths: [/charge]}\n",
            "  - {from: frontend, to: payments, methods: [POST], paths: [/refund]}\n",
        ),
        (
            '{from: "*", to: catalog, methods: [GET], paths: [/public/]}',
            '{from: "*", to: catalog, methods: [GET, HEAD], paths: [/public/]}',
        ),
    ) == [
        "access: * -> catalog HEAD /public/ now allowed",
        "access: frontend -> payments POST /charge now denied",
        "access: frontend -> payments POST /refund now allowed",
    ]


def test_rewording_access_rules_is_no_change(mtls: Plan) -> None:
    split = "methods: [HEAD]}\n  - {from: frontend, to: catalog, methods: [GET]}"
    code, _ = mtls.run(("methods: [GET, HEAD]}", split))
    assert code == 0


def test_tls_client_and_listener(mtls: Plan) -> None:
    assert mtls.lines(
        (
            '  tls:\n    mode: mutual\n    ca: certs/ca.pem\n    min_version: "1.3"\n',
            '  tls:\n    mode: mutual\n    ca: certs/ca.pem\n    min_version: "1.2"\n',
        ),
        ("      client_certificates: required", "      client_certificates: optional"),
        ("      sni: payments.mesh.test\n", ""),
    ) == [
        "listener mesh-edge: tls.client_certificates required -> optional",
        "service catalog: tls.min_version 1.3 -> 1.2",
        "service payments: tls.sni removed (was payments.mesh.test)",
        "service payments: tls.min_version 1.3 -> 1.2",
    ]


@pytest.fixture
def slo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Plan:
    return Plan(tmp_path, "slo", capsys)


def test_alerts_and_slos(slo: Plan) -> None:
    assert slo.lines(
        ('when: "error_rate > 5%"', 'when: "error_rate > 2%"'),
        (
            'when: "p99_latency > 500ms"\n      for: 5m\n      severity: ticket',
            'when: "p90_latency >= 1s"\n      for: 10m\n      severity: page',
        ),
        ("    - name: checkout-endpoints", "    - name: checkout-healthy"),
        ("objective: 99.9\n      window: 30d", "objective: 99.5\n      window: 7d"),
    ) == [
        "alert checkout-errors: threshold 5% -> 2%",
        "alert checkout-slow: signal p99_latency -> p90_latency",
        "alert checkout-slow: op > -> >=",
        "alert checkout-slow: threshold 500ms -> 1s",
        "alert checkout-slow: for 5m -> 10m",
        "alert checkout-slow: severity ticket -> page",
        "alert checkout-endpoints: removed",
        "alert checkout-healthy: added",
        "slo checkout-availability: objective 99.9% -> 99.5%",
        "slo checkout-availability: window 30d -> 7d",
    ]


def test_services_added_and_removed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zone = Plan(tmp_path, "zone-failover", capsys)
    assert zone.lines(
        ("      backup: payments-dr\n", ""),
        (
            "  payments-dr:\n    discovery:\n      static:\n"
            "        - {address: 127.0.0.1:9201, zone: dr}\n",
            "  ledger:\n    discovery:\n      static: [{address: 127.0.0.1:9301}]\n",
        ),
    ) == [
        "service ledger: added",
        "service payments: failover.backup removed (was payments-dr)",
        "service payments-dr: removed",
    ]


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_dist_and_its_mesh_yaml_have_no_difference(
    example: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DIST side is compared through its tables: the committed golden DIST of each example
    plans to nothing against the example's mesh.yaml, both ways, and against itself."""
    folder = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, folder)
    dist = ROOT / "tests" / "golden" / example
    spec = str(folder / "mesh.yaml")
    for args in ([str(dist), spec], [spec, str(dist)], [str(dist), str(dist)]):
        assert main(["plan", *args]) == 0, capsys.readouterr()


def test_only_a_mesh_yaml_side_gives_provenance(canary: Plan) -> None:
    """Changes are located in the mesh.yaml side whichever side it is, never in a DIST."""
    dist = canary.folder / "dist"
    assert main(["build", str(canary.old), "-o", str(dist)]) == 0
    canary.new.write_text(
        canary.edited(("weight: 10}", "weight: 50}"), ("weight: 90}", "weight: 50}"))
    )
    canary.capsys.readouterr()
    for args in ([str(dist), str(canary.new)], [str(canary.new), str(dist)]):
        assert main(["plan", *args, "--format", "json"]) == 3
        doc = json.loads(canary.capsys.readouterr().out)
        assert [c["where"].split(":")[0] for c in doc["changes"]] == [str(canary.new)] * 2


def test_a_dist_is_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A table file with code in it is refused (exit 1, naming file and line); the code never
    runs."""
    dist = tmp_path / "dist"
    shutil.copytree(ROOT / "tests" / "golden" / "quickstart", dist)
    marker = tmp_path / "ran"
    routing = dist / "mesh" / "routing.py"
    routing.write_text(
        routing.read_text() + f"\nX = __import__('pathlib').Path({str(marker)!r}).touch()\n"
    )
    spec = ROOT / "examples" / "quickstart" / "mesh.yaml"
    assert main(["plan", str(dist), str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{routing}: line" in err and "not a table file meshgen writes" in err
    assert not marker.exists()
    assert main(["plan", str(tmp_path), str(spec)]) == 1  # a folder that is no DIST
    assert "is not a DIST meshgen can read" in capsys.readouterr().err


def test_an_invalid_side_exits_1_with_diagnostics_on_stderr(
    canary: Plan,
) -> None:
    code, out = canary.run(("{service: reviews, subset: v2}", "{service: reveiws, subset: v2}"))
    assert code == 1 and out == ""
    assert f"{canary.new}:" in canary.err and "error[E2" in canary.err and "reveiws" in canary.err
    for fmt, check in (("json", json.loads), ("github", lambda s: s.startswith("::error"))):
        code, out = canary.run(
            ("{service: reviews, subset: v2}", "{service: reveiws, subset: v2}"),
            args=("--diagnostics", fmt),
        )
        assert code == 1 and out == ""
        assert check(canary.err)


def test_usage_errors_exit_2(canary: Plan, tmp_path: Path) -> None:
    canary.new.write_text(canary.text)
    dist = tmp_path / "dist"
    assert main(["build", str(canary.old), "-o", str(dist)]) == 0
    for args in (
        ["plan", str(canary.old)],
        ["plan", str(canary.old), str(canary.new), "--format", "html"],
        ["plan", "-", "-"],
        ["plan", str(dist), str(canary.new), "--old-overlay", str(canary.new)],
    ):
        canary.capsys.readouterr()
        assert main(args) == 2, args
        assert "Traceback" not in canary.capsys.readouterr().err


def test_overlays_on_either_side_and_where_names_the_overlay(canary: Plan) -> None:
    overlay = canary.folder / "prod.yaml"
    overlay.write_text("defaults:\n  timeout: 30s\n")
    canary.new.write_text(canary.text)
    canary.capsys.readouterr()
    assert main(["plan", str(canary.old), str(canary.new), "--new-overlay", str(overlay)]) == 3
    out = canary.capsys.readouterr().out
    assert out.splitlines()[0] == f"service reviews: timeout 10s -> 30s  ({overlay}:2)"
    args = ["--old-overlay", str(overlay), "--new-overlay", str(overlay)]
    assert main(["plan", str(canary.old), str(canary.new), *args]) == 0


def test_stdin_side(canary: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sys,
        "stdin",
        io.TextIOWrapper(
            io.BytesIO(
                canary.edited(
                    ("weight: 10}", "weight: 50}"), ("weight: 90}", "weight: 50}")
                ).encode()
            )
        ),
    )
    canary.capsys.readouterr()
    assert main(["plan", str(canary.old), "-"]) == 3
    assert "to reviews/v3 weight 10 -> 50" in canary.capsys.readouterr().out


def test_user_text_cannot_break_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A summary with Markdown, HTML, a mention, backticks and a terminal escape: the text
    output escapes the control character, Markdown keeps it all inside one code span."""
    slo = Plan(tmp_path, "slo", capsys)
    hostile = "x` <img src=x> @org/team [a](http://e) | \\u001b[31m ``"
    code, out = slo.run(
        ('summary: "checkout answers more than 5% errors"', f'summary: "{hostile}"')
    )
    assert code == 3
    assert "\x1b" not in out and "\\x1b[31m" in out
    code, md = slo.run(
        ('summary: "checkout answers more than 5% errors"', f'summary: "{hostile}"'),
        args=("--format", "markdown"),
    )
    item = next(line for line in md.splitlines() if "summary" in line)
    assert "``` x` <img src=x> @org/team [a](http://e) | \\x1b[31m `` ```" in item
    assert item.count("```") == 2
    code, js = slo.run(
        ('summary: "checkout answers more than 5% errors"', f'summary: "{hostile}"'),
        args=("--format", "json"),
    )
    change = json.loads(js)["changes"][0]
    assert change["new"] == hostile.replace("\\u001b", "\x1b")
    assert json.loads(js)["summary"] == {"added": 0, "removed": 0, "changed": 1}


def test_build_check_says_what_a_rebuild_changes(canary: Plan, tmp_path: Path) -> None:
    """`build --check` on a stale DIST lists the files and, in plan's words, the changes."""
    dist = tmp_path / "dist"
    assert main(["build", str(canary.old), "-o", str(dist)]) == 0
    canary.new.write_text(
        canary.edited(("weight: 90}", "weight: 80}"), ("weight: 10}", "weight: 20}"))
    )
    canary.capsys.readouterr()
    assert main(["build", str(canary.new), "-o", str(dist), "--check"]) == 1
    err = canary.capsys.readouterr().err
    assert "  differs: mesh/routing.py" in err
    assert err.endswith(
        f"what a rebuild changes (meshgen plan {dist} SPEC says where):\n"
        "  route reviews-split: to reviews/v1 weight 90 -> 80\n"
        "  route reviews-split: to reviews/v3 weight 10 -> 20\n"
    )


def test_markdown_fits_a_pull_request_comment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thousands of changes: the comment stays under GitHub's 65,536 characters and says how
    many changes it left out."""
    many = Plan(tmp_path, "quickstart", capsys)
    endpoints = "".join(
        f"        - {{address: 10.1.{i // 250}.{i % 250}:80}}\n" for i in range(3000)
    )
    code, md = many.run(
        ("        - {address: 127.0.0.1:9082}\n", endpoints), args=("--format", "markdown")
    )
    assert code == 3
    assert len(md) < 65_536
    assert md.startswith("### meshgen plan: 3001 changes (3000 added, 1 removed)")
    shown = md.count("\n- ")
    assert 100 < shown < 3001
    assert md.rstrip().endswith(f"… and {3001 - shown} more; `meshgen plan` prints every change.")


def test_tcp_listener_weights_and_sni_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tcp listener's `to` weights and `sni` entries are changes of their own, each located
    at its entry (the old file's for one removed)."""
    tcp = Plan(tmp_path, "tcp", capsys)
    code, out = tcp.run(
        (
            "    to: [{service: cache}]\n",
            "    to:\n      - {service: cache, weight: 80}\n      - {service: api, weight: 20}\n",
        ),
        ("      api.mesh.test: api\n", "      api.mesh.test: internal\n      db.mesh.test: api\n"),
        ('      "*.internal.mesh.test": internal\n', ""),
    )
    assert code == 3
    new_lines = tcp.new.read_text().splitlines()
    old_lines = tcp.old.read_text().splitlines()

    def at(lines: list[str], text: str) -> int:
        return next(i for i, line in enumerate(lines, start=1) if text in line)

    new, old = tcp.new, tcp.old
    assert out.splitlines()[:-2] == [
        f"listener cache: to cache 100 -> 80  ({new}:{at(new_lines, 'cache, weight: 80')})",
        f"listener cache: to api added (20)  ({new}:{at(new_lines, 'api, weight: 20')})",
        f"listener passthrough: sni *.internal.mesh.test removed"
        f"  ({old}:{at(old_lines, '*.internal.mesh.test')})",
        f"listener passthrough: sni api.mesh.test api -> internal"
        f"  ({new}:{at(new_lines, 'api.mesh.test: internal')})",
        f"listener passthrough: sni db.mesh.test added (api)"
        f"  ({new}:{at(new_lines, 'db.mesh.test: api')})",
    ]
