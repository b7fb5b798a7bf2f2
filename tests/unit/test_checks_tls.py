"""E501-E503, E505, W501-W502, W506-W508: TLS files, versions, verification, identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.h2_mesh import codes, diagnose, document


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A spec folder with certs/ca.pem, certs/c.pem, a private certs/k.pem and c.pem.key -> it."""
    folder = tmp_path / "certs"
    folder.mkdir()
    for name in ("ca.pem", "c.pem", "k.pem"):
        (folder / name).write_text("x")
    (folder / "k.pem").chmod(0o600)
    (folder / "c.pem.key").symlink_to("k.pem")
    return tmp_path


def service(tls: str) -> str:
    return (
        "services:\n  reviews:\n    discovery: {static: [{address: 127.0.0.1:1}]}\n"
        f"    tls: {tls}\n"
    )


def test_existing_files_relative_to_the_spec(certs: Path) -> None:
    """Relative paths resolve against the spec's folder, not the working directory."""
    spec = service("{mode: mutual, ca: certs/ca.pem, cert: certs/c.pem, key: certs/k.pem}")
    assert codes(spec, certs) == []


def test_missing_file(certs: Path) -> None:
    """E501 names the file as written, at its value."""
    (diag,) = diagnose(service("{mode: simple, ca: certs/nope.pem}"), certs)
    assert diag.code == "E501" and diag.message == "CA file 'certs/nope.pem' does not exist"
    assert diag.span.line == 6


def test_absolute_paths(certs: Path) -> None:
    """Absolute paths are used as they are."""
    assert codes(service(f"{{mode: simple, ca: '{certs / 'certs' / 'ca.pem'}'}}"), certs) == []


def test_disabled_tls_files_are_not_checked(certs: Path) -> None:
    """A CA from defaults is only checked where TLS is on, and only once."""
    spec = "defaults:\n  tls: {ca: certs/missing.pem}\n" + service("{mode: disable}")
    assert codes(spec, certs) == []
    two = (
        "defaults:\n  tls: {mode: simple, ca: certs/missing.pem}\nservices:\n"
        "  a: {discovery: {static: [{address: 127.0.0.1:1}]}}\n"
        "  b: {discovery: {static: [{address: 127.0.0.1:2}]}}\n"
    )
    assert codes(two, certs) == ["E501"]


def test_readable_key_warns(certs: Path) -> None:
    """W502 when the key can be read by group or others."""
    (certs / "certs" / "k.pem").chmod(0o644)
    spec = service("{mode: mutual, ca: certs/ca.pem, cert: certs/c.pem, key: certs/k.pem}")
    diags = diagnose(spec, certs)
    assert [d.code for d in diags] == ["W502"]
    assert "(mode 0644)" in diags[0].message


@pytest.mark.parametrize("version", ["'1.2'", "'1.3'"])
def test_supported_min_version_passes(certs: Path, version: str) -> None:
    """1.2 and 1.3 pass the checks (older versions are E502 from the schema: test_schema.py)."""
    spec = service(f"{{mode: simple, ca: certs/ca.pem, min_version: {version}}}")
    assert codes(spec, certs) == []


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ("{mode: simple, verify: false}", ["E503"]),
        ("{mode: simple, verify: false, insecure: true}", ["W501"]),
        ("{mode: simple}", []),
    ],
)
def test_verify_false_needs_insecure(tls: str, expected: list[str]) -> None:
    """Turning verification off must be explicit, and still warns."""
    assert codes(service(tls)) == expected


def test_mutual_needs_cert_and_key(certs: Path) -> None:
    """E505: mutual TLS without a client certificate."""
    assert codes(service("{mode: mutual, ca: certs/ca.pem}"), certs) == ["E505"]


def listener(tls: str) -> str:
    return (
        service("{mode: disable}")
        + f"listeners:\n  - name: edge\n    address: 127.0.0.1:0\n    tls: {tls}\n"
    )


def test_listener_tls(certs: Path) -> None:
    """Listener files are checked; client certificates need a CA."""
    assert codes(listener("{cert: certs/c.pem, key: certs/k.pem}"), certs) == []
    assert codes(listener("{cert: certs/c.pem, key: certs/gone.pem}"), certs) == ["E501"]
    asks = listener("{cert: certs/c.pem, key: certs/k.pem, client_certificates: required}")
    assert [c for c in codes(asks, certs) if c != "W504"] == ["E505"]


def sans(tls: str) -> list[tuple[str, str, str]]:
    """(code, message, the spanned text) of W506/W507."""
    lines = document(service(tls)).text.splitlines()
    return [
        (d.code, d.message, lines[d.span.line - 1][d.span.col - 1 : d.span.end_col - 1])
        for d in diagnose(service(tls))
        if d.code in ("W506", "W507")
    ]


def test_spiffe_san_of_another_trust_domain_warns() -> None:
    """W506 at the SAN itself; DNS names and this mesh's SPIFFE IDs are fine."""
    found = sans(
        "{mode: simple, subject_alt_names: [reviews.mesh.test, 'spiffe://shop/reviews', "
        "'spiffe://shops/reviews']}"
    )
    assert found == [
        (
            "W506",
            "subject_alt_name 'spiffe://shops/reviews' is in trust domain 'shops', not this "
            "mesh's 'shop'",
            "'spiffe://shops/reviews'",
        )
    ]
    (diag,) = [d for d in diagnose(service("{mode: simple, subject_alt_names: ['spiffe://x/y']}"))]
    assert diag.hint is not None and "spiffe://shop/y" in diag.hint
    assert sans("{mode: simple, subject_alt_names: ['spiffe://shop/reviews']}") == []


def test_spiffe_san_is_not_checked_when_tls_is_off() -> None:
    """mode: disable uses no SANs at all."""
    assert sans("{mode: disable, subject_alt_names: ['spiffe://other/reviews']}") == []


def test_sans_with_verify_false_are_ignored() -> None:
    """W507 at the subject_alt_names key (with a note at verify); W506 is not repeated."""
    tls = (
        "{mode: simple, verify: false, insecure: true, "
        "subject_alt_names: ['spiffe://other/reviews']}"
    )
    diags = [d for d in diagnose(service(tls)) if d.code in ("W506", "W507")]
    (diag,) = diags
    assert diag.code == "W507"
    assert diag.message == (
        "service 'reviews' sets subject_alt_names but verify: false, so they are ignored"
    )
    assert diag.related[0].message == "verification is turned off here"
    assert codes(service("{mode: simple, verify: false, insecure: true}")) == ["W501"]


@pytest.mark.parametrize("owner", ["listener", "service"])
def test_key_haproxy_cannot_find_warns(certs: Path, owner: str) -> None:
    """W508 at the certificate when its key is neither inside it nor at <cert>.key."""
    (certs / "certs" / "c.pem.key").unlink()
    files = "cert: certs/c.pem, key: certs/k.pem"
    spec = (
        listener("{" + files + "}")
        if owner == "listener"
        else service("{mode: mutual, ca: certs/ca.pem, " + files + "}")
    )
    (diag,) = diagnose(spec, certs)
    assert diag.code == "W508" and diag.severity == "warning"
    assert f"{owner} '" in diag.message and "'certs/c.pem.key' does not exist" in diag.message
    assert diag.hint is not None and "ln -s k.pem certs/c.pem.key" in diag.hint
    lines = document(spec).text.splitlines()
    assert lines[diag.span.line - 1][diag.span.col - 1 : diag.span.end_col - 1] == "certs/c.pem"


def test_key_inside_the_certificate_or_same_file_is_fine(certs: Path) -> None:
    (certs / "certs" / "c.pem.key").unlink()
    assert codes(listener("{cert: certs/k.pem, key: certs/k.pem}"), certs) == []
    (certs / "certs" / "c.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    assert codes(listener("{cert: certs/c.pem, key: certs/k.pem}"), certs) == []


def test_unverified_mutual_tls_sends_no_certificate_to_haproxy(certs: Path) -> None:
    """HAProxy's `verify none` server line carries no crt, so no key is needed there."""
    (certs / "certs" / "c.pem.key").unlink()
    tls = "{mode: mutual, cert: certs/c.pem, key: certs/k.pem, verify: false, insecure: true}"
    assert codes(service(tls), certs) == ["W501"]
