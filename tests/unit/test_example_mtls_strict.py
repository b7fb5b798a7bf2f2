"""examples/mtls passes `--strict` the way its README builds it, from a fresh checkout.

Git stores no file mode but the executable bit, so a checkout has the committed keys 0644;
`--strict` then fails with W502 for each key (rightly: a private key others can read), and the
README's first step (`meshgen certs ... --force`, keys written 0600) makes the strict build pass.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from meshgen.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mtls"


def _readme_meshgen_commands() -> list[list[str]]:
    block = re.search(r"^```sh\n(.*?)^```", (EXAMPLE / "README.md").read_text(), re.M | re.S)
    assert block is not None
    lines = [ln.split("#")[0].strip() for ln in block.group(1).splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("meshgen ")]


def test_fresh_checkout_builds_strictly_after_the_readme_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "mtls"
    shutil.copytree(EXAMPLE, work, symlinks=True, ignore=shutil.ignore_patterns("dist"))
    keys = sorted((work / "certs").glob("*-key.pem"))
    assert keys
    for key in keys:
        key.chmod(0o644)  # as `git clone` leaves them
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main(["validate", "mesh.yaml", "--strict"]) == 1
    warned = re.findall(r"warning\[W502\]: private key '([^']+)'", capsys.readouterr().err)
    assert warned and all((work / name).name in {k.name for k in keys} for name in warned)

    certs, build = _readme_meshgen_commands()
    assert certs[0] == "certs" and build[:1] == ["build"] and "--strict" in build
    assert main(certs) == 0
    assert main(build) == 0, capsys.readouterr().err
    assert all(key.stat().st_mode & 0o077 == 0 for key in keys)
