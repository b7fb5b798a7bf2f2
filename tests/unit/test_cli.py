"""The meshgen command: exit codes, output formats, --check, init, delegation, no tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen import __version__, cli, cli_args, pipeline
from meshgen.cli import main
from meshgen.emit import read_tree
from meshgen.init import starter_text

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart" / "mesh.yaml"
BROKEN = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  web:
    discovery:
      static: [{address: 127.0.0.1:9081}]
routes:
  - name: web
    match: {path_prefix: /}
    to: [{service: wbe}]
"""


def _spec(tmp_path: Path, text: str, name: str = "mesh.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_version_is_printed_without_importing_the_compiler() -> None:
    """--version stays fast: no jinja2, yaml or jsonschema import (see BENCHMARKS.md timing)."""
    code = (
        "import sys\nfrom meshgen.cli import main\nrc = main(['--version'])\n"
        "heavy = sorted(m for m in ('jinja2', 'yaml', 'jsonschema', 'jsonschema_rs',"
        " 'meshgen.pipeline') if m in sys.modules)\nprint(rc, heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.splitlines() == [f"meshgen {__version__}", "0 []"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["build", "mesh.yaml"]) == 2  # no -o
    assert main(["build", "mesh.yaml", "-o", "d", "--format", "xml"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "usage: meshgen" in err and "Traceback" not in err


def test_a_valid_spec_builds_and_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = tmp_path / "dist"
    assert main(["validate", str(QUICKSTART)]) == 0
    assert main(["build", str(QUICKSTART), "-o", str(dist)]) == 0
    assert (dist / "mesh" / "routing.py").is_file()
    assert main(["build", str(QUICKSTART), "-o", str(dist), "--check"]) == 0
    assert "up to date" in capsys.readouterr().err


def test_an_invalid_spec_exits_1_and_leaves_dist_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed build never touches the previous DIST, byte for byte."""
    dist = tmp_path / "dist"
    assert main(["build", str(QUICKSTART), "-o", str(dist)]) == 0
    before = read_tree(dist)
    spec = _spec(tmp_path, BROKEN)
    capsys.readouterr()
    assert main(["build", str(spec), "-o", str(dist)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:10:" in err and "wbe" in err and "Traceback" not in err
    assert read_tree(dist) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "mesh.yaml"]


def test_check_names_stale_missing_and_extra_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = tmp_path / "dist"
    assert main(["build", str(QUICKSTART), "-o", str(dist)]) == 0
    (dist / "mesh" / "health.py").write_text("HEALTH_CHECKS = {}\n")
    (dist / "requirements.txt").unlink()
    (dist / "notes.txt").write_text("x")
    capsys.readouterr()
    assert main(["build", str(QUICKSTART), "-o", str(dist), "--check"]) == 1
    err = capsys.readouterr().err
    assert "differs: mesh/health.py" in err
    assert "missing: requirements.txt" in err
    assert "extra: notes.txt" in err
    assert main(["build", str(QUICKSTART), "-o", str(tmp_path / "none"), "--check"]) == 1


def test_json_and_github_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, BROKEN)
    assert main(["validate", str(spec), "--format", "json"]) == 1
    out = capsys.readouterr().out
    assert "E2" in json.dumps(json.loads(out))
    assert main(["validate", str(spec), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("::") for line in lines)
    assert main(["validate", str(QUICKSTART), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) in ([], {"diagnostics": []})


def test_output_folder_that_is_not_a_dist_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["build", str(QUICKSTART), "-o", str(tmp_path)]) == 2
    assert "refusing" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_an_internal_error_is_a_short_report_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in a stage (injected here) prints one short report, never a traceback."""

    def broken_stage(*args: object, **kwargs: object) -> pipeline.Result:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(pipeline, "compile_spec", broken_stage)
    dist = tmp_path / "dist"
    assert main(["build", str(QUICKSTART), "-o", str(dist)]) == 2
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: injected fault" in err
    assert "Traceback" not in err and len(err.splitlines()) <= 3
    assert not dist.exists()


def test_the_module_entry_point_matches_the_script(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "meshgen", "validate", str(_spec(tmp_path, BROKEN))]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    assert out.returncode == 1 and "error[E2" in out.stderr and "Traceback" not in out.stderr


def test_the_command_flushes_what_it_printed_before_ending_a_build(tmp_path: Path) -> None:
    """A build through the command ends the process without freeing what it compiled
    (``cli.entry``): what it printed must still arrive through a pipe (block-buffered), and
    DIST be complete."""
    dist = tmp_path / "dist"
    argv = [sys.executable, "-m", "meshgen", "build", str(QUICKSTART), "-o", str(dist)]
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run(
        [*argv, "--format", "json"], capture_output=True, text=True, cwd=ROOT, env=buffered
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "[]\n", "")
    tree = read_tree(dist)
    assert set(json.loads(tree["MANIFEST.json"])["files"]) | {"MANIFEST.json"} == set(tree)
    out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    assert (out.returncode, out.stdout) == (0, "")
    assert out.stderr == f"{QUICKSTART} -> {dist}: {len(tree)} files\n"


VALIDATE_NEVER_IMPORTS = (
    "argparse",  # with gettext, ~3.5 ms: `validate SPEC...` without options needs no parser
    "dataclasses",  # with inspect, ~25 ms; the compiler's records are NamedTuples or classes
    "difflib",  # suggestions for a mistake
    "fractions",  # SLO burn-rate windows, planned by a build
    "gettext",
    "inspect",
    "jinja2",
    "json",  # prints --format json and explains an invalid spec; jsonschema-rs parses the schema
    "jsonschema",  # python-jsonschema explains an invalid spec; a valid one never needs it
    "meshgen.checks.access_verdicts",  # the runtime's access policy, for enforced listeners
    "meshgen.emit",
    "meshgen.plan",  # tables are made by a build
    "meshgen.review",
    "meshgen.runtime",  # its table types alone cost more than every meshgen module together
    "meshgen.source_errors",  # explains a spec that does not load
    "meshgen.targets",
    "shutil",  # argparse's formatter imports it for the terminal's width (meshgen.cli_args asks os)
    "tempfile",
    "threading",  # composes a deeply nested spec on a thread with a large stack
    "zipfile",
)


def _validate_in_a_process(before: str, after: str) -> str:
    """The last line printed by a fresh process that runs the code ``before``, a ``meshgen
    validate`` of the quickstart (its exit status in ``rc``), then the code ``after``."""
    code = f"{before}\nfrom meshgen.cli import main\nrc = main(['validate', {str(QUICKSTART)!r}])\n"
    out = subprocess.run(
        [sys.executable, "-c", code + after],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.splitlines()[-1]


def _validate_imports() -> list[str]:
    """The modules a ``meshgen validate`` of the quickstart imports beyond what site hooks
    (.pth files) import before any meshgen code."""
    last = _validate_in_a_process(
        "import sys", "modules = sorted(sys.modules)\nimport json\nprint(json.dumps([rc, modules]))"
    )
    rc, modules = json.loads(last)
    assert rc == 0
    assert "meshgen.checks" in modules and "jsonschema_rs" in modules  # it did validate
    at_start = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; m = sorted(sys.modules); import json; print(json.dumps(m))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    preloaded = set(json.loads(at_start.stdout))
    return [m for m in modules if m not in preloaded]


def test_validate_imports_nothing_it_does_not_use() -> None:
    """``meshgen validate`` of a valid spec starts fast: no renderer, template engine, review
    command, runtime module, table, dataclass, writer, or python-jsonschema, which explains an
    invalid spec only. (A spec with access rules imports what judges them: the runtime's path
    normalisation and, for enforced listeners, its access policy.)"""
    unwanted = [
        m
        for m in _validate_imports()
        if any(m == n or m.startswith(n + ".") for n in VALIDATE_NEVER_IMPORTS)
    ]
    assert unwanted == []


def test_validate_makes_no_typing_named_tuple() -> None:
    """meshgen's records on validate's path are :class:`meshgen.record.Record` classes:
    ``typing.NamedTuple`` costs ~0.3 M instructions more per class (evaluating and checking
    each annotation), ~11 M of a validate's ~290 M for its ~45 classes. Both make the class
    with ``collections.namedtuple``: the test notes who called it for which module."""
    watch = (
        "import collections, json, sys\nreal = collections.namedtuple\ncalls = []\n"
        "def namedtuple(*args, **kwargs):\n"
        "    frame = sys._getframe(1)\n"
        "    maker = frame.f_globals['__name__']\n"
        "    while frame.f_globals['__name__'] in ('typing', 'meshgen.record'):\n"
        "        frame = frame.f_back\n"
        "    calls.append([maker, frame.f_globals['__name__']])\n"
        "    return real(*args, **kwargs)\n"
        "collections.namedtuple = namedtuple"
    )
    rc, calls = json.loads(_validate_in_a_process(watch, "print(json.dumps([rc, calls]))"))
    assert rc == 0 and ["meshgen.record", "meshgen.model"] in calls
    assert [c for c in calls if c[0] == "typing" and c[1].startswith("meshgen")] == []


def test_validate_leaves_yaml_reader_with_meshgens_pattern() -> None:
    """meshgen.pyyaml's cheaper pattern is the one yaml.reader took (~52 M instructions, ~20%
    of a validate): fails when PyYAML's text changed, when Python's ``re`` caches differently,
    or when a module imported yaml before meshgen.pyyaml."""
    report = (
        "import yaml.reader\nfrom meshgen.pyyaml import NON_PRINTABLE\n"
        "print(rc, yaml.reader.Reader.NON_PRINTABLE.pattern == NON_PRINTABLE)"
    )
    assert _validate_in_a_process("", report) == "0 True"


@pytest.mark.parametrize(
    "args",
    [["validate", "mesh.yaml"], ["validate", "a.yaml", "b c/mesh.yaml", ""], ["validate", "x.y"]],
)
def test_a_plain_validate_parses_as_argparse_does(args: list[str]) -> None:
    """``validate SPEC...`` skips building argparse's parser: its namespace must be the
    parser's (an option added to validate, or a changed default, fails here)."""
    assert vars(cli._plain_validate(args)) == vars(cli_args.parser("validate").parse_args(args))


@pytest.mark.parametrize(
    "args", [["validate"], ["validate", "-"], ["validate", "a", "--strict"], ["build", "a"], []]
)
def test_any_other_command_line_goes_to_argparse(args: list[str]) -> None:
    assert cli._plain_validate(args) is None


_ARGUMENT = st.one_of(
    st.sampled_from(["validate", "build", "-", "--", "--strict", "--format", "json", "-o", "-x"]),
    st.text(max_size=8),
)


@given(st.tuples(st.sampled_from(["validate", "build", ""]), st.lists(_ARGUMENT, max_size=4)))
def test_no_command_line_parses_differently_without_argparse(
    command_line: tuple[str, list[str]],
) -> None:
    """Whatever the command line, the fast path either declines it or parses it as argparse
    does (argparse refusing a line the fast path took fails here too)."""
    args = [command_line[0], *command_line[1]]
    plain = cli._plain_validate(args)
    if plain is not None:
        assert vars(plain) == vars(cli_args.parser("validate").parse_args(args))


def test_validate_compiles_no_text() -> None:
    """``meshgen validate`` calls ``compile()`` on no text: a process's first call creates the
    ~120 classes of the ``ast`` module (~4 ms), and ``typing.NamedTuple`` compiles each quoted
    annotation of its fields (meshgen's records are ``meshgen.record.Record`` classes instead).
    Module sources, compiled from bytes when there is no bytecode cache, are not counted."""
    watch = (
        "import builtins\nreal = builtins.compile\ntexts = []\n"
        "def compile(source, *args, **kwargs):\n"
        "    if isinstance(source, str):\n"
        "        texts.append(source)\n"
        "    return real(source, *args, **kwargs)\n"
        "builtins.compile = compile"
    )
    assert _validate_in_a_process(watch, "print(rc, texts)") == "0 []"


def test_help_is_as_wide_as_argparse_makes_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """meshgen's help formatter finds the terminal's width without shutil, as argparse does."""
    for columns in (None, "0", "x", "44", "200"):
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        helps = []
        for formatter in (cli_args._Formatter, argparse.HelpFormatter):
            monkeypatch.setattr(cli_args, "_Formatter", formatter)
            assert main(["--help"]) == 0
            assert main(["validate", "--help"]) == 0
            helps.append(capsys.readouterr().out)
        assert helps[0] == helps[1], columns


def test_init_writes_a_starter_that_validates_and_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    spec = tmp_path / "mesh.yaml"
    assert spec.read_text() == starter_text("mesh.yaml")
    first = spec.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=https://meshgen.dev/schemas/mesh.schema.json"
    assert main(["build", "mesh.yaml", "-o", "dist", "--strict"]) == 0, capsys.readouterr().err
    assert main(["init"]) == 2
    assert "--force" in capsys.readouterr().err
    spec.write_text("changed")
    assert main(["init", "--force"]) == 0
    assert spec.read_text() == starter_text("mesh.yaml")
    (tmp_path / "sub").mkdir()
    assert main(["init", "sub"]) == 0
    assert (tmp_path / "sub" / "mesh.yaml").is_file()
    assert main(["init", "new/folder"]) == 0
    assert (tmp_path / "new" / "folder" / "mesh.yaml").is_file()
    assert main(["init", "other.yml"]) == 0
    assert (tmp_path / "other.yml").is_file()


def test_certs_is_delegated(tmp_path: Path) -> None:
    """`meshgen certs` runs meshgen.certs.main with the remaining arguments."""
    assert main(["certs", str(QUICKSTART), "-o", str(tmp_path / "certs"), "--days", "2"]) == 0
    assert (tmp_path / "certs" / "hello.pem").is_file()
