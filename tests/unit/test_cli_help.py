"""Every command and every argument of meshgen (and of the runtime it runs) says what it does."""

from __future__ import annotations

import argparse
import json

import pytest

from meshgen import certs, cli, cli_args, precommit
from meshgen.resources import schema_path
from meshgen.runtime.app.main import arg_parser

DELEGATED = {
    "run": arg_parser("meshgen run", with_dist=True),
    "certs": certs._parser(),
}
"""Commands whose stub in cli_args.py hands argv to another parser (add_help=False there)."""


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    top = cli_args.parser()
    found = {"meshgen": top}
    for name, sub in _subcommands(top).choices.items():
        found[f"meshgen {name}"] = DELEGATED.get(name, sub)
    found["python DIST"] = arg_parser()
    hooks = precommit._parser()
    found["python -m meshgen.precommit"] = hooks
    for name, sub in _subcommands(hooks).choices.items():
        found[f"python -m meshgen.precommit {name}"] = sub
    return found


def test_delegated_commands_are_the_ones_without_their_own_help() -> None:
    """A stub without -h is delegated and its real parser is walked below (none is missed)."""
    stubs = {n for n, p in _subcommands(cli_args.parser()).choices.items() if not p.add_help}
    assert stubs == set(DELEGATED)


def test_a_named_command_alone_parses_as_in_the_full_parser() -> None:
    """A command line that names a command builds only that command's parser (faster)."""
    full = _subcommands(cli_args.parser()).choices
    assert list(full) == list(cli_args.COMMANDS)
    for name in cli_args.COMMANDS:
        (only,) = _subcommands(cli_args.parser(name)).choices.items()
        assert only[0] == name and only[1].format_help() == full[name].format_help()


def test_every_subcommand_has_help() -> None:
    for choice in _subcommands(cli_args.parser())._choices_actions:
        assert choice.help, f"meshgen {choice.dest} has no help text"


@pytest.mark.parametrize(("prog", "parser"), sorted(_all_parsers().items()))
def test_every_argument_has_help(prog: str, parser: argparse.ArgumentParser) -> None:
    """Positional and optional arguments alike carry a help text (shown by --help)."""
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction)
        and (not a.help or a.help == argparse.SUPPRESS)
    ]
    assert missing == [], f"{prog}: no help for {missing}"


def test_run_help_needs_no_dist(capsys: pytest.CaptureFixture[str]) -> None:
    """`meshgen run --help` prints the runtime's options; no DIST is needed for that."""
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: meshgen run [-h]") and "DIST" in out
    for option in ("--listener", "--root", "--ready-file", "--watch", "--grace"):
        assert option in out


def test_schema_prints_the_shipped_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`meshgen schema` writes the schema meshgen validates with, byte for byte."""
    assert cli.main(["schema"]) == 0
    out = capsys.readouterr().out
    assert out == schema_path().read_text(encoding="utf-8")
    assert json.loads(out)["$schema"] == "https://json-schema.org/draft/2020-12/schema"
