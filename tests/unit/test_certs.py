"""meshgen certs: what it issues, key modes, overwrite protection, and runtime acceptance."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshgen import certs
from meshgen.runtime.policy import tls
from meshgen.runtime.tables import ClientTls, ServerTls

SPEC = """\
version: 1
mesh: {name: shop, domain: mesh.test}
services:
  payments: {discovery: {static: [{address: "127.0.0.1:9001"}]}}
  on: {discovery: {static: [{address: "127.0.0.1:9002"}]}}
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls: {cert: certs/edge.pem, key: certs/edge-key.pem, ca: certs/ca.pem,
          client_certificates: required}
access:
  - {from: frontend, to: payments}
  - {from: "*", to: on}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(SPEC)
    return path


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_identities_from_services_callers_listeners_and_names(spec: Path) -> None:
    """Services, access callers (not *), TLS listeners and --name; `on` stays a string."""
    ids = certs.read_identities(spec, ["batch"])
    assert ids == certs.MeshIdentities(
        "shop", "mesh.test", ("batch", "edge", "frontend", "on", "payments")
    )


def test_writes_ca_and_workload_certs_with_private_keys_0600(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert certs.main([str(spec), "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["ca.pem", "ca-key.pem"]
        + [
            f"{n}{s}"
            for n in ("edge", "frontend", "on", "payments")
            for s in (".pem", "-key.pem", ".pem.key")
        ]
    )
    for path in out.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        private = path.name.endswith(("-key.pem", ".pem.key"))
        assert mode == (0o600 if private else 0o644), path


def test_haproxy_key_links_are_relative_symlinks(spec: Path, tmp_path: Path) -> None:
    """<cert>.key names <name>-key.pem relatively: no second copy of the key bytes."""
    out = tmp_path / "certs"
    certs.main([str(spec), "-o", str(out)])
    link = out / "edge.pem.key"
    assert link.is_symlink() and str(link.readlink()) == "edge-key.pem"
    moved = tmp_path / "moved"
    out.rename(moved)  # still resolves after the folder moves
    assert (moved / "edge.pem.key").read_bytes() == (moved / "edge-key.pem").read_bytes()
    assert certs.main([str(spec), "-o", str(moved), "--force"]) == 0  # replaced in place
    assert (moved / "edge.pem.key").readlink() == Path("edge-key.pem")


def test_workload_certificate_contents(spec: Path, tmp_path: Path) -> None:
    """SPIFFE URI SAN, DNS name and name.domain, loopback IPs, server+client auth, CA-signed."""
    out = tmp_path / "certs"
    certs.main([str(spec), "-o", str(out)])
    cert = load(out / "payments.pem")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://shop/payments"]
    assert san.get_values_for_type(x509.DNSName) == ["payments", "payments.mesh.test", "localhost"]
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca = load(out / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    cert.verify_directly_issued_by(ca)


def test_refuses_to_overwrite_keys_without_force(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    certs.main([str(spec), "-o", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert certs.main([str(spec), "-o", str(out)]) == certs.EXIT_USAGE
    assert "refusing to overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert certs.main([str(spec), "-o", str(out), "--force"]) == 0
    assert (out / "ca-key.pem").read_bytes() != before["ca-key.pem"]
    assert stat.S_IMODE((out / "ca-key.pem").stat().st_mode) == 0o600


def test_keep_ca_reissues_from_the_same_ca(spec: Path, tmp_path: Path) -> None:
    """--keep-ca: new workload keys and certificates, same CA, so trust does not change; it is
    a rotation, so it replaces the workload keys without --force (and keeps them 0600)."""
    out = tmp_path / "certs"
    certs.main([str(spec), "-o", str(out)])
    ca, ca_key = (out / "ca.pem").read_bytes(), (out / "ca-key.pem").read_bytes()
    leaf, key = (out / "payments.pem").read_bytes(), (out / "payments-key.pem").read_bytes()
    assert certs.main([str(spec), "-o", str(out), "--keep-ca", "--days", "2"]) == 0
    assert (out / "ca.pem").read_bytes() == ca and (out / "ca-key.pem").read_bytes() == ca_key
    assert (out / "payments.pem").read_bytes() != leaf
    assert (out / "payments-key.pem").read_bytes() != key
    assert stat.S_IMODE((out / "payments-key.pem").stat().st_mode) == 0o600
    new = load(out / "payments.pem")
    assert (new.not_valid_after_utc - new.not_valid_before_utc).days == 2
    new.verify_directly_issued_by(load(out / "ca.pem"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nmesh: {name: Shop}\nservices: {a: {}}\n", "mesh.name"),
        ("version: 1\nmesh: {name: shop}\nservices: {A_b: {}}\n", "'A_b'"),
        ("version: 1\nmesh: {name: shop}\n", "no services"),
        ("version: 1\nmesh: [\n", "not valid YAML"),
    ],
)
def test_bad_spec_exits_1(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "mesh.yaml"
    spec.write_text(text)
    assert certs.main([str(spec), "-o", str(tmp_path / "c")]) == certs.EXIT_INVALID
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_missing_spec_and_bad_days(tmp_path: Path) -> None:
    assert certs.main([str(tmp_path / "nope.yaml"), "-o", str(tmp_path)]) == certs.EXIT_INVALID
    assert certs.main([str(tmp_path / "nope.yaml"), "-o", str(tmp_path), "--days", "0"]) == 2


def test_runtime_accepts_the_certificates(spec: Path) -> None:
    """The files load into the runtime's contexts and give the SPIFFE identity over TLS."""
    root = spec.parent
    certs.main([str(spec), "-o", str(root / "certs")])
    server = tls.server_context(
        "edge",
        ServerTls("certs/edge.pem", "certs/edge-key.pem", "certs/ca.pem", "required"),
        root,
    )
    cfg = ClientTls(
        mode="mutual",
        ca="certs/ca.pem",
        cert="certs/frontend.pem",
        key="certs/frontend-key.pem",
        subject_alt_names=("spiffe://shop/edge",),
    )
    up = tls.upstream_tls("edge", cfg, root)
    assert up is not None
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = up.context.wrap_bio(c_in, c_out, server_hostname="edge")
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert cli.version() == srv.version() == "TLSv1.3"
    up.check_peer(cli)
    assert tls.peer_identity(srv, "shop") == "frontend"


def test_cli_delegates(spec: Path, tmp_path: Path) -> None:
    """`meshgen certs` on the command line is this module."""
    proc = subprocess.run(
        [sys.executable, "-m", "meshgen", "certs", str(spec), "-o", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "development" in proc.stdout and "spiffe://shop/frontend" in proc.stdout
