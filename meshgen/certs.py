"""``meshgen certs mesh.yaml -o certs/``: a DEVELOPMENT certificate authority and workload certs.

Development only: the CA key sits unencrypted next to the certificates it signs, and anyone
holding it can mint any identity of the mesh. Use a real PKI (SPIRE, cert-manager, Vault) for
anything that matters.

Output (``-o DIR``): ``ca.pem`` / ``ca-key.pem``, then ``<name>.pem`` / ``<name>-key.pem`` for
every workload name: each service, each ``access`` caller (``from``) that is not ``*``, each
listener with ``tls``, and each ``--name``. A workload certificate carries the SPIFFE ID
``spiffe://<mesh.name>/<name>`` as its only URI SAN, DNS SANs ``<name>``, ``<name>.<domain>``
and ``localhost``, IP SANs ``127.0.0.1`` and ``::1``, and is valid for both server and client
authentication, so one file serves a listener, an upstream and an mTLS caller alike.

Next to each workload certificate, ``<name>.pem.key`` is a relative symlink to
``<name>-key.pem``: HAProxy's ``crt FILE`` loads a key that is not inside FILE from
``FILE.key``, so the HAProxy build runs as is, and no second copy of the key bytes exists (a
relative link keeps working when the folder is copied or committed; git stores symlinks).

Keys are ECDSA P-256, PKCS#8 PEM, created with mode 0600. Every file (and link) is written to a
temporary name and renamed into place, so a runtime reloading during a rotation never reads half
a file.
Existing keys are never overwritten without ``--force``; ``--keep-ca`` re-issues the workload
certificates and keys from the CA already in DIR (rotation without changing trust), which is
what it is for, so it replaces them without ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshgen.pyyaml import yaml
from meshgen.runtime.policy.tls import spiffe_id

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
CA_DAYS = 3650
CLOCK_SKEW = dt.timedelta(minutes=5)


class CertsError(Exception):
    """A problem the user must fix; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MeshIdentities:
    """What the certificates need from mesh.yaml: the trust domain, DNS zone and workload names."""

    mesh: str
    domain: str | None
    names: tuple[str, ...]


def read_identities(path: Path, extra: Iterable[str] = ()) -> MeshIdentities:
    """Read mesh.name, mesh.domain and the workload names (all scalars read as strings)."""
    try:
        # BaseLoader builds only str/list/dict: a service named `on` or `no` stays a string.
        data: Any = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    except OSError as exc:
        raise CertsError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CertsError(f"{path}: not valid YAML ({exc}); run `meshgen validate` on it") from exc
    mesh = data.get("mesh") if isinstance(data, dict) else None
    name = mesh.get("name") if isinstance(mesh, dict) else None
    if not isinstance(name, str) or not NAME.match(name):
        raise CertsError(f"{path}: mesh.name must be a name like 'shop' (the SPIFFE trust domain)")
    domain = mesh.get("domain") if isinstance(mesh, dict) else None
    names: dict[str, None] = {}
    services = data.get("services")
    if isinstance(services, dict):
        names.update(dict.fromkeys(services))
    for rule in data.get("access") or ():
        if isinstance(rule, dict) and isinstance(rule.get("from"), str) and rule["from"] != "*":
            names[rule["from"]] = None
    for listener in data.get("listeners") or ():
        if isinstance(listener, dict) and listener.get("tls") and listener.get("name"):
            names[listener["name"]] = None
    names.update(dict.fromkeys(extra))
    bad = [n for n in names if not isinstance(n, str) or not NAME.match(n)]
    if bad:
        raise CertsError(f"{path}: {bad[0]!r} is not a valid name for a certificate")
    if not names:
        raise CertsError(f"{path}: no services, callers or listeners to issue certificates for")
    return MeshIdentities(
        name, domain if isinstance(domain, str) and domain else None, tuple(sorted(names))
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Digital signature always; certificate and CRL signing only for the CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(mesh: str, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may sign only end-entity certificates (pathlen 0)."""
    key = _key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshgen development"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"meshgen development CA for {mesh}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_workload_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    ids: MeshIdentities,
    name: str,
    now: dt.datetime,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server+client certificate for workload ``name`` with its SPIFFE ID and DNS/IP SANs."""
    key = _key()
    dns = [name, *([f"{name}.{ids.domain}"] if ids.domain else []), "localhost"]
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(ids.mesh, name)),
        *(x509.DNSName(d) for d in dict.fromkeys(dns)),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file created with ``mode``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widen beyond `mode`
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _link(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target`` (relative to its folder), replacing what is there."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    os.symlink(target, tmp)
    os.replace(tmp, path)


def key_link(cert: Path) -> Path:
    """Where HAProxy looks for the key of certificate ``cert``: ``<cert>.key``."""
    return cert.with_name(cert.name + ".key")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((out / "ca-key.pem").read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise CertsError(f"--keep-ca: cannot load {out}/ca.pem and ca-key.pem: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"--keep-ca: {out}/ca-key.pem is not an EC key written by meshgen certs")
    return cert, key


def issue(
    ids: MeshIdentities,
    out: Path,
    *,
    days: int = 365,
    force: bool = False,
    keep_ca: bool = False,
    now: dt.datetime | None = None,
) -> list[Path]:
    """Write the CA (unless ``keep_ca``) and one certificate per name; returns the paths written."""
    now = now or dt.datetime.now(dt.UTC)
    keys = [] if keep_ca else [out / "ca-key.pem"]
    keys += [out / f"{n}-key.pem" for n in ids.names]
    existing = [k for k in keys if k.exists()]
    if existing and not (force or keep_ca):  # --keep-ca is a rotation: new workload keys
        listed = ", ".join(str(k) for k in existing)
        raise CertsError(f"refusing to overwrite existing keys ({listed}); use --force", EXIT_USAGE)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if keep_ca:
        ca_cert, ca_key = _load_ca(out)
    else:
        ca_cert, ca_key = make_ca(ids.mesh, now)
        _write(out / "ca-key.pem", _key_pem(ca_key), 0o600)
        _write(out / "ca.pem", _pem(ca_cert), 0o644)
        written += [out / "ca.pem", out / "ca-key.pem"]
    for name in ids.names:
        cert, key = make_workload_cert(ca_cert, ca_key, ids, name, now, days)
        # Key (and its link) first: a reader that sees the new certificate must find its key.
        _write(out / f"{name}-key.pem", _key_pem(key), 0o600)
        _link(key_link(out / f"{name}.pem"), f"{name}-key.pem")
        _write(out / f"{name}.pem", _pem(cert), 0o644)
        written += [out / f"{name}.pem", out / f"{name}-key.pem", key_link(out / f"{name}.pem")]
    return written


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshgen certs",
        description="Write a DEVELOPMENT CA and one certificate per service/caller/listener. "
        "Not for production: the CA key is stored unencrypted next to the certificates.",
    )
    p.add_argument("spec", type=Path, metavar="mesh.yaml", help="the mesh to issue them for")
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="folder to write them to"
    )
    p.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="NAME",
        help="also issue a certificate for NAME (a caller that is not in mesh.yaml)",
    )
    p.add_argument("--days", type=int, default=365, help="workload certificate validity (365)")
    p.add_argument("--force", action="store_true", help="overwrite existing keys (and the CA)")
    p.add_argument(
        "--keep-ca",
        action="store_true",
        help="rotate: re-issue workload certificates and keys from the CA already in DIR "
        "(no --force needed)",
    )
    return p


def main(argv: list[str]) -> int:
    """``meshgen certs`` (argv after ``certs``); returns the exit code."""
    ns = _parser().parse_args(argv)
    if ns.days < 1:
        print("meshgen certs: --days must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        ids = read_identities(ns.spec, ns.name)
        written = issue(ids, ns.output, days=ns.days, force=ns.force, keep_ca=ns.keep_ca)
    except CertsError as exc:
        print(f"meshgen certs: {exc}", file=sys.stderr)
        return exc.code
    print(f"wrote {len(written)} files to {ns.output} (development CA: do not use in production)")
    for name in ids.names:
        print(f"  {name}: {spiffe_id(ids.mesh, name)}")
    return EXIT_OK
