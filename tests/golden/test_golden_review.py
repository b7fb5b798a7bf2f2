"""Golden outputs of the review commands on the examples: each case runs `meshgen ...` from the
repository root (so paths print as written here) and compares stdout and the exit code with
tests/golden/review/<case>.out. Regenerate with ``python -m pytest tests/golden --update-golden``
and read the diff: it is what a reviewer would see change.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from meshgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "review"
UPDATE = "python -m pytest tests/golden --update-golden"

CASES = {
    "plan-canary": "plan examples/canary/mesh.yaml docs/review/canary-next.yaml",
    "plan-canary-markdown": "plan examples/canary/mesh.yaml docs/review/canary-next.yaml"
    " --format markdown",
    "plan-canary-json": "plan examples/canary/mesh.yaml docs/review/canary-next.yaml --format json",
    "plan-mtls-overlay": "plan examples/mtls/mesh.yaml examples/mtls/mesh.yaml"
    " --new-overlay docs/review/mtls-lockdown.yaml",
    "plan-mtls-overlay-markdown": "plan examples/mtls/mesh.yaml examples/mtls/mesh.yaml"
    " --new-overlay docs/review/mtls-lockdown.yaml --format markdown",
    "plan-slo": "plan examples/slo/mesh.yaml tests/golden/review/slo-stricter.yaml",
    "plan-dist-vs-spec": "plan tests/golden/quickstart examples/quickstart/mesh.yaml",
    "plan-zone-failover-from-dist": "plan tests/golden/zone-failover"
    " tests/golden/review/zone-failover-drill.yaml",
    "explain-canary-split": "explain examples/canary/mesh.yaml --request 'GET http://reviews/x'",
    "explain-canary-jason": "explain examples/canary/mesh.yaml"
    " --request 'GET http://reviews/' -H 'end-user: jason'",
    "explain-canary-overlay": "explain examples/canary/mesh.yaml"
    " --overlay tests/golden/review/canary-prod.yaml --request 'GET http://reviews/'",
    "explain-canary-no-route": "explain examples/canary/mesh.yaml"
    " --request 'GET http://reviews.mesh.test/'",
    "explain-mtls-allowed": "explain examples/mtls/mesh.yaml"
    " --request 'POST https://payments.mesh.test/charge' --from frontend",
    "explain-mtls-denied-json": "explain examples/mtls/mesh.yaml"
    " --request 'DELETE https://payments.mesh.test/charge/../admin' --from frontend --format json",
    "explain-mtls-audit": "explain examples/mtls/mesh.yaml"
    " --overlay tests/golden/review/mtls-audit.yaml"
    " --request 'DELETE https://payments.mesh.test/charge' --from frontend",
    "plan-mtls-audit": "plan examples/mtls/mesh.yaml examples/mtls/mesh.yaml"
    " --new-overlay tests/golden/review/mtls-audit.yaml",
    "explain-mtls-no-certificate": "explain examples/mtls/mesh.yaml"
    " --request 'GET https://catalog.mesh.test/public/'",
    "explain-zone-failover": "explain examples/zone-failover/mesh.yaml"
    " --request 'POST http://payments/pay'",
    "explain-dns": "explain examples/dns/mesh.yaml"
    " --request 'HEAD /items' -H 'Host: inventory.mesh.test'",
    "explain-service-zone-failover": "explain examples/zone-failover/mesh.yaml --service payments",
    "explain-service-canary-overlay": "explain examples/canary/mesh.yaml"
    " --overlay tests/golden/review/canary-prod.yaml --service reviews",
    "explain-service-slo-json": "explain examples/slo/mesh.yaml --service checkout --format json",
    "explain-tcp-to": "explain examples/tcp/mesh.yaml --request 'GET http://cache/'",
    "explain-tcp-sni": "explain examples/tcp/mesh.yaml --listener passthrough"
    " --request 'GET https://db.eu.internal.mesh.test/'",
    "explain-tcp-sni-no-match-json": "explain examples/tcp/mesh.yaml --listener passthrough"
    " --request 'GET https://mesh.test/' --format json",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_review_output_matches_golden(
    case: str,
    update_golden: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(ROOT)
    code = main(shlex.split(CASES[case]))
    out = capsys.readouterr().out
    got = f"$ meshgen {CASES[case]}\n{out}(exit {code})\n"
    golden = GOLDEN / f"{case}.out"
    if update_golden:
        golden.write_text(got)
    assert golden.exists(), f"no golden output for {case}; run `{UPDATE}`"
    assert got == golden.read_text(), f"output of {case} changed; if intended, run `{UPDATE}`"
