"""policy/tls.py: contexts, identity checks and reload, with real handshakes over memory BIOs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshgen import certs
from meshgen.runtime.policy import tls
from meshgen.runtime.tables import (
    ClientCertificates,
    ClientTls,
    Listener,
    MeshInfo,
    ServerTls,
    Tables,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def handshake(
    client: ssl.SSLContext, server: ssl.SSLContext, server_hostname: str | None
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A complete TLS handshake between two contexts, bytes shuttled through memory BIOs."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server may reject the client certificate after the client finished.
            cli.write(b"ping")
            s_in.write(c_out.read())
            assert srv.read(4) == b"ping"
            return cli, srv
    raise AssertionError("handshake did not finish")


@pytest.fixture(scope="module")
def mesh_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`meshgen certs` output for mesh `shop`: payments, frontend, edge."""
    root = tmp_path_factory.mktemp("root")
    ids = certs.MeshIdentities("shop", "mesh.test", ("edge", "frontend", "payments"))
    certs.issue(ids, root / "certs")
    return root


def write_cert(path: Path, sans: list[x509.GeneralName], ca: Path) -> None:
    """A leaf with arbitrary SANs signed by the meshgen CA in ``ca`` (for odd certificates)."""
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def server_for(
    root: Path, name: str, clients: ClientCertificates = "none", min_version: str = "1.2"
) -> ssl.SSLContext:
    """The server context of listener-like TLS with the `meshgen certs` files of ``name``."""
    cfg = ServerTls(
        f"certs/{name}.pem", f"certs/{name}-key.pem", "certs/ca.pem", clients, min_version
    )
    return tls.server_context("edge", cfg, root)


def test_disable_builds_no_context(tmp_path: Path) -> None:
    """mode disable means plain TCP: no context at all."""
    assert tls.upstream_tls("payments", ClientTls(), tmp_path) is None


def test_simple_context_verifies_by_default(mesh_certs: Path) -> None:
    """simple mode verifies the chain and, without subject_alt_names, the host name, TLS>=1.2."""
    up = tls.upstream_tls("payments", ClientTls(mode="simple", ca="certs/ca.pem"), mesh_certs)
    assert up is not None
    assert up.context.verify_mode == ssl.CERT_REQUIRED
    assert up.context.check_hostname
    assert up.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert all("GCM" in c["name"] or "CHACHA" in c["name"] for c in up.context.get_ciphers())
    cli, _ = handshake(
        up.context, server_for(mesh_certs, "payments"), up.server_hostname("payments")
    )
    up.check_peer(cli)
    assert cli.version() == "TLSv1.3"


def test_sni_is_the_default_identity(mesh_certs: Path) -> None:
    """The SNI name is checked against the certificate when no subject_alt_names are given."""
    cfg = ClientTls(mode="simple", ca="certs/ca.pem", sni="payments.mesh.test")
    up = tls.upstream_tls("payments", cfg, mesh_certs)
    assert up is not None and up.server_hostname("127.0.0.1") == "payments.mesh.test"
    handshake(up.context, server_for(mesh_certs, "payments"), up.server_hostname("127.0.0.1"))
    wrong = tls.upstream_tls(
        "payments", ClientTls(mode="simple", ca="certs/ca.pem", sni="reviews.mesh.test"), mesh_certs
    )
    assert wrong is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(wrong.context, server_for(mesh_certs, "payments"), wrong.server_hostname("x"))


def test_endpoint_ip_is_checked_without_sni(mesh_certs: Path) -> None:
    """Without SNI the endpoint host (an IP here) must be an IP SAN of the certificate."""
    up = tls.upstream_tls("payments", ClientTls(mode="simple", ca="certs/ca.pem"), mesh_certs)
    assert up is not None
    handshake(up.context, server_for(mesh_certs, "payments"), up.server_hostname("127.0.0.1"))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(up.context, server_for(mesh_certs, "payments"), up.server_hostname("10.1.2.3"))


def test_unknown_ca_is_refused(mesh_certs: Path, tmp_path: Path) -> None:
    """A server certificate from another CA fails verification."""
    other = trustme.CA()
    other.cert_pem.write_to_path(tmp_path / "other-ca.pem")
    up = tls.upstream_tls(
        "payments", ClientTls(mode="simple", ca=str(tmp_path / "other-ca.pem")), mesh_certs
    )
    assert up is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(up.context, server_for(mesh_certs, "payments"), "payments")


def test_spiffe_subject_alt_names(mesh_certs: Path) -> None:
    """URI SANs are checked after the handshake; a different SPIFFE ID is refused."""
    good = ClientTls(
        mode="simple", ca="certs/ca.pem", subject_alt_names=("spiffe://shop/payments",)
    )
    up = tls.upstream_tls("payments", good, mesh_certs)
    assert up is not None and not up.context.check_hostname
    cli, _ = handshake(
        up.context, server_for(mesh_certs, "payments"), up.server_hostname("127.0.0.1")
    )
    up.check_peer(cli)
    bad = tls.upstream_tls(
        "payments",
        ClientTls(
            mode="simple",
            ca="certs/ca.pem",
            subject_alt_names=("spiffe://shop/reviews", "reviews.mesh.test"),
        ),
        mesh_certs,
    )
    assert bad is not None
    cli, _ = handshake(bad.context, server_for(mesh_certs, "payments"), "payments")
    with pytest.raises(tls.PeerIdentityError, match="spiffe://shop/payments"):
        bad.check_peer(cli)


@pytest.mark.parametrize(
    ("expected", "sans", "ok"),
    [
        ("spiffe://shop/a", (("URI", "spiffe://shop/a"),), True),
        ("spiffe://shop/a", (("URI", "spiffe://shop/ab"),), False),
        ("spiffe://shop/a", (("DNS", "spiffe://shop/a"),), False),
        ("A.Mesh.Test.", (("DNS", "a.mesh.test"),), True),
        ("a.mesh.test", (("DNS", "*.mesh.test"),), True),
        ("x.a.mesh.test", (("DNS", "*.mesh.test"),), False),
        ("mesh.test", (("DNS", "*.mesh.test"),), False),
        ("a.mesh.test", (("URI", "a.mesh.test"),), False),
        ("::1", (("IP Address", "0:0:0:0:0:0:0:1\n"),), True),
        ("127.0.0.1", (("DNS", "127.0.0.1"),), False),
        ("127.0.0.1", (("IP Address", "127.0.0.2"),), False),
    ],
)
def test_san_matching(expected: str, sans: tuple[tuple[str, str], ...], ok: bool) -> None:
    """URI exact, DNS case-insensitive with one-label wildcards, IPs by value, kinds never mix."""
    assert tls._san_matches(expected, sans) is ok


def test_min_version_13_refuses_a_12_only_peer(mesh_certs: Path) -> None:
    """min_version 1.3 on the upstream side refuses a server that stops at TLS 1.2."""
    up = tls.upstream_tls(
        "payments", ClientTls(mode="simple", ca="certs/ca.pem", min_version="1.3"), mesh_certs
    )
    assert up is not None and up.context.minimum_version == ssl.TLSVersion.TLSv1_3
    server = server_for(mesh_certs, "payments")
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(up.context, server, "payments")


def test_bad_min_version_and_missing_files(tmp_path: Path) -> None:
    """Config errors name the owner and the file."""
    with pytest.raises(tls.TlsConfigError, match=r"1\.1"):
        tls.upstream_tls("p", ClientTls(mode="simple", min_version="1.1"), tmp_path)
    with pytest.raises(tls.TlsConfigError, match=r"service p: cannot load .*nope\.pem"):
        tls.upstream_tls("p", ClientTls(mode="simple", ca="nope.pem"), tmp_path)
    with pytest.raises(tls.TlsConfigError, match="listener edge"):
        tls.server_context("edge", ServerTls("c.pem", "k.pem"), tmp_path)
    with pytest.raises(tls.TlsConfigError, match="needs ca"):
        tls.server_context(
            "edge", ServerTls("c.pem", "k.pem", client_certificates="required"), tmp_path
        )


def test_verify_false_warns_and_accepts_anything(
    mesh_certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """verify: false turns checks off and logs a warning naming the service."""
    other = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    other.issue_cert("elsewhere").configure_cert(server)
    with caplog.at_level(logging.WARNING, logger="meshgen.tls"):
        up = tls.upstream_tls(
            "legacy", ClientTls(mode="simple", verify=False, subject_alt_names=("x",)), tmp_path
        )
    assert up is not None and up.context.verify_mode == ssl.CERT_NONE
    assert "legacy" in caplog.text and "NOT verify" in caplog.text
    cli, _ = handshake(up.context, server, "payments")
    up.check_peer(cli)


def test_mutual_presents_the_client_identity(mesh_certs: Path) -> None:
    """mode mutual sends the client certificate; the server reads the caller's SPIFFE name."""
    cfg = ClientTls(
        mode="mutual", ca="certs/ca.pem", cert="certs/frontend.pem", key="certs/frontend-key.pem"
    )
    up = tls.upstream_tls("payments", cfg, mesh_certs)
    assert up is not None
    _, srv = handshake(up.context, server_for(mesh_certs, "payments", "required"), "payments")
    assert tls.peer_identity(srv, "shop") == "frontend"
    assert tls.peer_identity(srv, "other-mesh") is None


def test_mutual_needs_cert_and_key(tmp_path: Path) -> None:
    with pytest.raises(tls.TlsConfigError, match="mutual needs cert and key"):
        tls.upstream_tls("p", ClientTls(mode="mutual", verify=False), tmp_path)


@pytest.mark.parametrize(
    ("mode", "verify"),
    [("none", ssl.CERT_NONE), ("optional", ssl.CERT_OPTIONAL), ("required", ssl.CERT_REQUIRED)],
)
def test_client_certificates_modes(
    mesh_certs: Path, mode: ClientCertificates, verify: ssl.VerifyMode
) -> None:
    assert server_for(mesh_certs, "edge", mode).verify_mode == verify


def test_required_rejects_missing_and_foreign_client_certs(
    mesh_certs: Path, tmp_path: Path
) -> None:
    """required: no certificate, or one from another CA, fails the handshake."""
    server = server_for(mesh_certs, "edge", "required")
    anonymous = tls.upstream_tls("edge", ClientTls(mode="simple", ca="certs/ca.pem"), mesh_certs)
    assert anonymous is not None
    with pytest.raises(ssl.SSLError):
        handshake(anonymous.context, server, "edge")
    other = trustme.CA()
    other.issue_cert("frontend").private_key_and_cert_chain_pem.write_to_path(tmp_path / "f.pem")
    foreign = tls.upstream_tls(
        "edge",
        ClientTls(
            mode="mutual",
            ca="certs/ca.pem",
            cert=str(tmp_path / "f.pem"),
            key=str(tmp_path / "f.pem"),
        ),
        mesh_certs,
    )
    assert foreign is not None
    with pytest.raises(ssl.SSLError):
        handshake(foreign.context, server, "edge")


def test_optional_accepts_anonymous_without_identity(mesh_certs: Path) -> None:
    """optional: a caller without a certificate connects, with identity None."""
    up = tls.upstream_tls("edge", ClientTls(mode="simple", ca="certs/ca.pem"), mesh_certs)
    assert up is not None
    _, srv = handshake(up.context, server_for(mesh_certs, "edge", "optional"), "edge")
    assert tls.peer_identity(srv, "shop") is None


@pytest.mark.parametrize(
    "uris",
    [
        ["spiffe://shop/a", "spiffe://shop/b"],
        ["spiffe://shop/a/b"],
        ["spiffe://shop/"],
        ["spiffe://shopping/a"],
        [],
    ],
)
def test_identity_needs_exactly_one_spiffe_id_of_this_mesh(
    mesh_certs: Path, tmp_path: Path, uris: list[str]
) -> None:
    """Several URI SANs, extra path segments or another trust domain give no identity."""
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    write_cert(tmp_path / "odd.pem", sans, mesh_certs / "certs")
    cfg = ClientTls(
        mode="mutual",
        ca="certs/ca.pem",
        cert=str(tmp_path / "odd.pem"),
        key=str(tmp_path / "odd.pem"),
    )
    up = tls.upstream_tls("edge", cfg, mesh_certs)
    assert up is not None
    _, srv = handshake(up.context, server_for(mesh_certs, "edge", "required"), "edge")
    assert tls.peer_identity(srv, "shop") is None


def test_cert_not_after_takes_the_earliest(tmp_path: Path) -> None:
    """notAfter of a leaf; the minimum over a chain (leaf first) or a CA bundle."""
    ids = certs.MeshIdentities("shop", "mesh.test", ("a",))
    certs.issue(ids, tmp_path, days=10, now=NOW)
    leaf = tls.cert_not_after(tmp_path / "a.pem")
    assert leaf == (NOW + dt.timedelta(days=10)).timestamp()
    assert (
        tls.cert_not_after(tmp_path / "ca.pem")
        == (NOW + dt.timedelta(days=certs.CA_DAYS)).timestamp()
    )
    chain = tmp_path / "chain.pem"  # leaf first, then its CA: the usual chain order
    chain.write_bytes((tmp_path / "a.pem").read_bytes() + (tmp_path / "ca.pem").read_bytes())
    assert tls.cert_not_after(chain) == leaf
    soon = certs.make_ca("shop", NOW - dt.timedelta(days=certs.CA_DAYS - 3))[0]
    bundle = tmp_path / "bundle.pem"  # two CAs: the second one expires first
    bundle.write_bytes(
        (tmp_path / "ca.pem").read_bytes() + soon.public_bytes(serialization.Encoding.PEM)
    )
    assert tls.cert_not_after(bundle) == (NOW + dt.timedelta(days=3)).timestamp()
    with pytest.raises(tls.TlsConfigError):
        tls.cert_not_after(tmp_path / "a-missing.pem")


def tables_with_tls() -> Tables:
    server = ServerTls("certs/edge.pem", "certs/edge-key.pem", "certs/ca.pem", "required")
    return Tables(
        mesh=MeshInfo("shop", "mesh.test"),
        clusters=(),
        routes=(),
        listeners=(
            Listener("edge", "127.0.0.1", 0, (), server),
            Listener("plain", "127.0.0.1", 0, ()),
        ),
        client_tls={
            "payments": ClientTls(
                mode="mutual",
                ca="certs/ca.pem",
                cert="certs/frontend.pem",
                key="certs/frontend-key.pem",
            ),
            "catalog": ClientTls(),
        },
    )


def test_cert_files_lists_certificates_never_keys(tmp_path: Path) -> None:
    files = tls.cert_files(tables_with_tls(), tmp_path)
    assert [(f.service, f.file) for f in files] == [
        ("payments", "certs/ca.pem"),
        ("payments", "certs/frontend.pem"),
        ("edge", "certs/edge.pem"),
        ("edge", "certs/ca.pem"),
    ]
    assert files[0].path == tmp_path / "certs/ca.pem"


def test_derive_rereads_certificates_in_place(tmp_path: Path) -> None:
    """After rotation, derive(): the same listener context serves the new certificate."""
    ids = certs.MeshIdentities("shop", "mesh.test", ("edge", "frontend"))
    certs.issue(ids, tmp_path / "certs")
    ctxs = tls.TlsContexts(tables_with_tls(), tmp_path)
    assert ctxs.upstream("catalog") is None and ctxs.listener("plain") is None
    listener = ctxs.listener("edge")
    assert listener is not None
    up = ctxs.upstream("payments")
    assert up is not None
    cli, srv = handshake(up.context, listener, "edge")
    before = tls.peer_sans(cli), cli.getpeercert(binary_form=True)
    certs.issue(ids, tmp_path / "certs", force=True, keep_ca=True)
    nxt = ctxs.derive(tables_with_tls())
    assert nxt.listener("edge") is listener
    assert ctxs.upstream("payments") is up  # the old generation is unchanged
    up2 = nxt.upstream("payments")
    assert up2 is not None and up2 is not up
    cli, srv = handshake(up2.context, listener, "edge")
    assert (tls.peer_sans(cli), cli.getpeercert(binary_form=True)) != before
    assert tls.peer_identity(srv, nxt.trust_domain) == "frontend"


def test_changed_listener_settings_get_a_new_context(tmp_path: Path) -> None:
    """A listener whose tls settings changed gets a new context (its socket must reopen)."""
    certs.issue(certs.MeshIdentities("shop", "mesh.test", ("edge", "frontend")), tmp_path / "certs")
    first = tables_with_tls()
    ctxs = tls.TlsContexts(first, tmp_path)
    edge = first.listeners[0]
    assert edge.tls is not None
    optional = dataclasses.replace(
        edge, tls=dataclasses.replace(edge.tls, client_certificates="optional")
    )
    nxt = ctxs.derive(dataclasses.replace(first, listeners=(optional,)))
    new = nxt.listener("edge")
    assert new is not None and new is not ctxs.listener("edge")
    assert new.verify_mode == ssl.CERT_OPTIONAL


def test_reload_is_all_or_nothing(tmp_path: Path) -> None:
    """A mismatched key after a half-done rotation fails derive() and the old keeps serving."""
    ids = certs.MeshIdentities("shop", "mesh.test", ("edge", "frontend"))
    certs.issue(ids, tmp_path / "certs")
    ctxs = tls.TlsContexts(tables_with_tls(), tmp_path)
    old_up = ctxs.upstream("payments")
    key = (tmp_path / "certs/edge-key.pem").read_bytes()
    certs.issue(ids, tmp_path / "certs", force=True, keep_ca=True)
    (tmp_path / "certs/edge-key.pem").write_bytes(key)  # new certificate, old key
    with pytest.raises(tls.TlsConfigError, match="listener edge"):
        ctxs.derive(tables_with_tls())
    assert ctxs.upstream("payments") is old_up
    listener = ctxs.listener("edge")
    assert old_up is not None and listener is not None
    handshake(old_up.context, listener, "edge")
