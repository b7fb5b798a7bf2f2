"""examples/mtls as shipped: its HAProxy build passes ``haproxy -dW -c`` with no manual step.

HAProxy loads the key of ``crt FILE`` from ``FILE.key``; ``meshgen certs`` writes that as a
relative symlink and the example ships those links (git stores symlinks), so nobody has to
link keys by hand. The config is checked from the example folder itself, as docs/haproxy.md
says to run it, so the links are resolved exactly as committed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import require_binary

from meshgen import pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mtls"


def test_shipped_key_links_are_relative_symlinks() -> None:
    links = sorted(EXAMPLE.glob("certs/*.pem.key"))
    assert [p.name for p in links] == [
        f"{n}.pem.key" for n in ("catalog", "frontend", "mesh-edge", "payments")
    ]
    for link in links:
        assert link.is_symlink() and str(link.readlink()) == link.name.replace(
            ".pem.key", "-key.pem"
        )


def test_mtls_example_haproxy_config_is_valid_as_shipped(tmp_path: Path) -> None:
    haproxy = require_binary("haproxy")
    result = pipeline.compile_spec(EXAMPLE / "mesh.yaml")
    assert result.files is not None, [d.message for d in result.diagnostics]
    assert not [d for d in result.diagnostics if d.code == "W508"]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(result.files["haproxy/haproxy.cfg"])
    proc = subprocess.run(
        [haproxy, "-dW", "-c", "-f", str(cfg)],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
