"""Golden dist/ trees: every example builds to exactly the files recorded in tests/golden/<name>/.

The recorded tree leaves out ``meshgen_runtime/`` (asserted equal to meshgen/runtime instead)
and writes the meshgen version as ``VERSION``, so neither a runtime change nor a release
rewrites the goldens. Regenerate with ``python -m pytest tests/golden --update-golden``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from meshgen import __version__
from meshgen.cli import main
from meshgen.emit import MANIFEST, read_tree, sha256
from meshgen.targets.python import runtime_sources

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/mesh.yaml"))
UPDATE = "python -m pytest tests/golden --update-golden"
RUNTIME = "meshgen_runtime/"


def normalise(tree: dict[str, bytes]) -> dict[str, bytes]:
    """Drop the runtime copy and write the version as VERSION (MANIFEST hashes follow suit)."""
    out: dict[str, bytes] = {}
    for path, data in tree.items():
        if path.startswith(RUNTIME) or path == MANIFEST:
            continue
        out[path] = data.replace(f"meshgen {__version__} ".encode(), b"meshgen VERSION ")
    manifest = json.loads(tree[MANIFEST])
    manifest["meshgen"] = "VERSION"
    manifest["files"] = {p: sha256(out[p]) for p in sorted(out)}
    out[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return out


def test_there_are_examples() -> None:
    assert {"quickstart", "canary", "zone-failover", "mtls", "dns", "slo", "tcp"} <= set(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_dist_matches_golden(
    example: str,
    tmp_path: Path,
    update_golden: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`meshgen build <name>/mesh.yaml` writes exactly the recorded tree, warning-free.

    The example is copied first so its private keys can get mode 0600, as a checkout (git keeps
    only 0644/0755) would need before a warning-free build.
    """
    shutil.copytree(
        ROOT / "examples" / example, tmp_path / example, ignore=shutil.ignore_patterns("dist")
    )
    for key in (tmp_path / example).rglob("*-key.pem"):
        key.chmod(0o600)
    monkeypatch.chdir(tmp_path)
    dist = tmp_path / "dist"
    code = main(["build", f"{example}/mesh.yaml", "-o", str(dist), "--strict"])
    err = capsys.readouterr().err
    assert code == 0, err
    tree = read_tree(dist)
    manifest = json.loads(tree[MANIFEST])
    assert manifest["files"] == {p: sha256(d) for p, d in tree.items() if p != MANIFEST}
    assert manifest["meshgen"] == __version__
    spec_bytes = (ROOT / "examples" / example / "mesh.yaml").read_bytes()
    assert manifest["spec"] == {"name": "mesh.yaml", "sha256": sha256(spec_bytes)}
    runtime = {p: d for p, d in tree.items() if p.startswith(RUNTIME)}
    assert runtime == {f"{RUNTIME}{rel}": p.read_bytes() for rel, p in runtime_sources().items()}
    actual = normalise(tree)
    golden = GOLDEN / example
    if update_golden:
        shutil.rmtree(golden, ignore_errors=True)
        for path, data in actual.items():
            (golden / path).parent.mkdir(parents=True, exist_ok=True)
            (golden / path).write_bytes(data)
        return
    if not golden.is_dir():
        pytest.fail(f"no golden tree for {example}; create it with: {UPDATE}")
    expected = read_tree(golden)
    changed = sorted(p for p in actual.keys() | expected.keys() if actual.get(p) != expected.get(p))
    assert not changed, f"dist of {example} differs in {changed}; if intended run: {UPDATE}"
