"""TLS for the runtime: SSLContexts built from the generated tables, and peer identities.

Theory of operation:

* **Upstreams** (``ClientTls``, one per service): the server certificate is verified against
  the configured CA (the system store when no CA is given). With no ``subject_alt_names`` the
  expected identity is the SNI name, or the endpoint host, and OpenSSL checks it during the
  handshake (``check_hostname``). With ``subject_alt_names`` OpenSSL only verifies the chain and
  :meth:`UpstreamTls.check_peer` matches the peer's SANs after the handshake, because Python's
  ``ssl`` cannot match URI SANs (SPIFFE IDs). ``verify: false`` (the compiler only accepts it
  together with ``insecure: true``) turns every check off and logs a warning each time the
  contexts are built.
* **Listeners** (``ServerTls``): certificate + key, and ``client_certificates``
  none / optional / required mapped to ``CERT_NONE`` / ``CERT_OPTIONAL`` / ``CERT_REQUIRED``.
  A caller's identity is the single URI SAN ``spiffe://<mesh>/<name>`` of its verified
  certificate (:func:`peer_identity`).
* Both sides accept TLS 1.2 or 1.3 only (``min_version``) and, for TLS 1.2, only AEAD suites
  with forward secrecy (Mozilla "intermediate"); TLS 1.3 suites are OpenSSL's defaults.
* **Reload** (:meth:`TlsContexts.derive`): every certificate, key and CA file is re-read. New
  files are loaded into scratch contexts first, so a half-written rotation never replaces a
  working context. Upstream contexts are replaced (new connections use the new ones). Listener
  contexts are updated *in place* so a listening socket keeps serving: ``load_cert_chain``
  replaces the certificate for new handshakes; ``load_verify_locations`` *adds* the new CA, so
  an old CA stays trusted for client certificates until restart (the usual CA-rotation overlap).
* File paths are resolved against the runtime's ``--root``. Key bytes are never logged.

Only the standard library is used: certificate expiry comes from CPython's own certificate
decoder (:func:`cert_not_after`), so the runtime needs no ``cryptography`` wheel.
"""

from __future__ import annotations

import _ssl
import ipaddress
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from ..tables import ClientCertificates, ClientTls, Listener, ServerTls, Tables

log = logging.getLogger("meshgen.tls")

MIN_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}

# Mozilla "intermediate" TLS 1.2 suites: ECDHE/DHE key exchange, AEAD ciphers only.
TLS12_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)

VERIFY_MODES: Mapping[ClientCertificates, ssl.VerifyMode] = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TlsConfigError(Exception):
    """A TLS file that cannot be read or used; the message names the owner and the file."""


class PeerIdentityError(ssl.SSLError):
    """The upstream's verified certificate does not carry any of the expected identities."""


# What an asyncio transport exposes as ``get_extra_info("ssl_object")``, or a blocking socket.
PeerCertSource = ssl.SSLObject | ssl.SSLSocket


def resolve(path: str, root: Path) -> Path:
    """A file path from the tables: absolute, or relative to the runtime's ``--root``."""
    p = Path(path)
    return p if p.is_absolute() else root / p


def spiffe_id(trust_domain: str, name: str) -> str:
    """The SPIFFE ID meshgen gives the workload ``name`` in mesh ``trust_domain``."""
    return f"spiffe://{trust_domain}/{name}"


def _base_context(purpose: int, min_version: str) -> ssl.SSLContext:
    try:
        minimum = MIN_VERSIONS[min_version]
    except KeyError:
        raise TlsConfigError(f"min_version {min_version!r} is not one of 1.2, 1.3") from None
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = minimum
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load(what: str, action: Callable[[], None], *files: Path) -> None:
    try:
        action()
    except (OSError, ssl.SSLError, ValueError) as exc:
        names = ", ".join(str(f) for f in files)
        raise TlsConfigError(f"{what}: cannot load {names}: {exc}") from exc


def _san_matches(expected: str, sans: tuple[tuple[str, str], ...]) -> bool:
    if "://" in expected:
        return any(kind == "URI" and value == expected for kind, value in sans)
    try:
        ip = ipaddress.ip_address(expected)
    except ValueError:
        want = expected.lower().rstrip(".")
        for kind, value in sans:
            if kind != "DNS":
                continue
            have = value.lower().rstrip(".")
            if have == want:
                return True
            # RFC 6125: a wildcard stands for exactly one whole left-most label.
            if have.startswith("*.") and "." in want and want.split(".", 1)[1] == have[2:]:
                return True
        return False
    for kind, value in sans:
        if kind == "IP Address":
            try:
                if ipaddress.ip_address(value.strip()) == ip:
                    return True
            except ValueError:
                continue
    return False


def peer_sans(sslobj: PeerCertSource) -> tuple[tuple[str, str], ...]:
    """The verified peer certificate's subjectAltName entries; empty if there is none."""
    cert = sslobj.getpeercert()
    if not cert:
        return ()
    return tuple(cast(tuple[tuple[str, str], ...], cert.get("subjectAltName", ())))


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """Everything needed to open a TLS connection to one service's endpoints."""

    service: str
    context: ssl.SSLContext
    sni: str | None
    expected: tuple[str, ...]  # subject_alt_names; empty: OpenSSL checks the server name
    verify: bool

    def server_hostname(self, host: str) -> str:
        """Pass as ``server_hostname``: the SNI (and default identity), else the endpoint host."""
        return self.sni or host

    def check_peer(self, sslobj: PeerCertSource) -> None:
        """Call after the handshake; raises :class:`PeerIdentityError` on an identity mismatch."""
        if not self.verify or not self.expected:
            return
        sans = peer_sans(sslobj)
        if not any(_san_matches(name, sans) for name in self.expected):
            have = ", ".join(f"{k}:{v}" for k, v in sans) or "none"
            raise PeerIdentityError(
                f"service {self.service}: peer certificate SANs ({have}) match none of "
                f"{', '.join(self.expected)}"
            )


def upstream_tls(
    service: str, cfg: ClientTls, root: Path, alpn: tuple[str, ...] = ()
) -> UpstreamTls | None:
    """The client-side TLS for ``service``; ``None`` when ``mode`` is ``disable``. ``alpn``:
    the protocols offered in the handshake (a gRPC server insists on ``h2``)."""
    if cfg.mode == "disable":
        return None
    what = f"tls of service {service}"
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, cfg.min_version)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning(
            "TLS to service %s does NOT verify the server certificate (verify: false)", service
        )
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = not cfg.subject_alt_names
        if cfg.ca:
            ca = resolve(cfg.ca, root)
            _load(what, lambda: ctx.load_verify_locations(cafile=str(ca)), ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cfg.mode == "mutual":
        if not (cfg.cert and cfg.key):
            raise TlsConfigError(f"{what}: mode mutual needs cert and key")
        cert, key = resolve(cfg.cert, root), resolve(cfg.key, root)
        _load(what, lambda: ctx.load_cert_chain(str(cert), str(key)), cert, key)
    return UpstreamTls(service, ctx, cfg.sni, cfg.subject_alt_names, cfg.verify)


def _load_server_files(ctx: ssl.SSLContext, what: str, cfg: ServerTls, root: Path) -> None:
    cert, key = resolve(cfg.cert, root), resolve(cfg.key, root)
    _load(what, lambda: ctx.load_cert_chain(str(cert), str(key)), cert, key)
    if cfg.ca:
        ca = resolve(cfg.ca, root)
        _load(what, lambda: ctx.load_verify_locations(cafile=str(ca)), ca)


def server_context(
    listener: str, cfg: ServerTls, root: Path, alpn: tuple[str, ...] = ()
) -> ssl.SSLContext:
    """The server-side context of ``listener``: its certificate and client-certificate policy.
    ``alpn``: the protocols it offers instead of ``http/1.1`` (an ``http`` listener: ``h2``
    first, so HTTP/2 clients get it)."""
    what = f"tls of listener {listener}"
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, cfg.min_version)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cfg.client_certificates != "none" and not cfg.ca:
        raise TlsConfigError(f"{what}: client_certificates {cfg.client_certificates} needs ca")
    ctx.verify_mode = VERIFY_MODES[cfg.client_certificates]
    _load_server_files(ctx, what, cfg, root)
    return ctx


def peer_identity(sslobj: PeerCertSource, trust_domain: str) -> str | None:
    """The caller name from the verified client certificate's SPIFFE ID, or ``None``.

    ``None`` when there is no verified certificate, when it does not hold exactly one URI SAN
    (SPIFFE X.509-SVID rule), or when that URI is not ``spiffe://<trust_domain>/<name>`` with a
    single path segment.
    """
    uris = [value for kind, value in peer_sans(sslobj) if kind == "URI"]
    if len(uris) != 1:
        return None
    prefix = f"spiffe://{trust_domain}/"
    uri = uris[0]
    if not uri.startswith(prefix):
        return None
    name = uri[len(prefix) :]
    if not name or "/" in name or "?" in name or "#" in name:
        return None
    return name


def cert_not_after(path: Path) -> float:
    """The earliest ``notAfter`` (Unix time) of the first certificate and every CA in a PEM file.

    That covers a leaf, a chain (leaf first, as servers send it) and a CA bundle. The first
    certificate is decoded with CPython's own decoder, the one ``getpeercert()`` uses; the CA
    certificates come from the public ``get_ca_certs()``. The standard library has no public way
    to decode a certificate file, and ``cryptography`` would add a compiled wheel to the runtime
    for one date. Raises :class:`TlsConfigError` when the file holds no certificate.
    """
    decode = cast(Callable[[str], dict[str, Any]], _ssl._test_decode_cert)  # type: ignore[attr-defined]
    times: list[float] = []
    try:
        times.append(ssl.cert_time_to_seconds(decode(str(path))["notAfter"]))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
        raise TlsConfigError(f"cannot read certificate {path}: {exc}") from exc
    for ca in ctx.get_ca_certs():
        times.append(ssl.cert_time_to_seconds(cast(str, ca["notAfter"])))
    return min(times)


@dataclass(frozen=True, slots=True)
class CertFile:
    """A certificate file the runtime loads, labelled for ``meshgen_cert_expiry_timestamp_seconds``.

    ``service`` is the service for upstream TLS, the listener name for listener TLS.
    ``file`` is the path as written in mesh.yaml.
    """

    service: str
    file: str
    path: Path


def cert_files(tables: Tables, root: Path) -> tuple[CertFile, ...]:
    """Every certificate and CA file (never a key) the tables make the runtime load."""
    seen: dict[tuple[str, str], CertFile] = {}
    for service, cfg in sorted(tables.client_tls.items()):
        if cfg.mode == "disable":
            continue
        files = [cfg.ca if cfg.verify else None, cfg.cert if cfg.mode == "mutual" else None]
        for f in files:
            if f:
                seen.setdefault((service, f), CertFile(service, f, resolve(f, root)))
    for listener in tables.listeners:
        if listener.tls is None:
            continue
        for f in (listener.tls.cert, listener.tls.ca):
            if f:
                seen.setdefault((listener.name, f), CertFile(listener.name, f, resolve(f, root)))
    return tuple(seen.values())


def listener_alpn(listener: Listener) -> tuple[str, ...]:
    """The ALPN protocols a listener offers: HTTP/2 and HTTP/1.1 on an ``http`` listener."""
    return ("h2", "http/1.1") if listener.protocol == "http" else ()


class TlsContexts:
    """The TLS contexts of one table generation.

    Look upstream contexts up per new connection (``upstream()``), so the next generation's take
    effect for the next connection. A listening socket keeps the context it was opened with:
    :meth:`derive` therefore hands unchanged listeners the *same* context object, with its
    files re-read in place.
    """

    def __init__(
        self,
        tables: Tables,
        root: Path,
        listeners: Mapping[str, tuple[ServerTls, ssl.SSLContext]] | None = None,
    ) -> None:
        self.root = root
        self.tables = tables
        self._upstreams: dict[str, UpstreamTls] = {}
        # HTTP/2 endpoints are asked for ALPN h2 (a gRPC server refuses a handshake without it)
        h2 = {c.name for c in tables.clusters if c.protocol in ("http2", "grpc")}
        for service, cfg in sorted(tables.client_tls.items()):
            built = upstream_tls(service, cfg, root, ("h2",) if service in h2 else ())
            if built is not None:
                self._upstreams[service] = built
        self._listeners: dict[str, tuple[ServerTls, ssl.SSLContext]] = (
            dict(listeners)
            if listeners is not None
            else {
                lst.name: (lst.tls, server_context(lst.name, lst.tls, root, listener_alpn(lst)))
                for lst in tables.listeners
                if lst.tls is not None
            }
        )

    @property
    def trust_domain(self) -> str:
        return self.tables.mesh.name

    def upstream(self, service: str) -> UpstreamTls | None:
        """TLS for connections to ``service``; ``None`` for plain TCP."""
        return self._upstreams.get(service)

    def listener(self, name: str) -> ssl.SSLContext | None:
        """The server context of listener ``name``; ``None`` for plain HTTP."""
        entry = self._listeners.get(name)
        return entry[1] if entry else None

    def cert_files(self) -> tuple[CertFile, ...]:
        return cert_files(self.tables, self.root)

    def derive(self, tables: Tables) -> TlsContexts:
        """The contexts of the next generation (a reload), every TLS file read again.

        Upstream contexts are new. A listener whose ``tls`` settings are unchanged keeps its
        context object, re-loaded in place, so its open socket serves the new certificate;
        a listener with changed settings gets a new context, so whoever holds its socket must
        reopen it (compare :meth:`listener` of both generations). All files are validated in
        scratch contexts first: on :class:`TlsConfigError` nothing has changed.
        """
        plan: dict[str, tuple[ServerTls, ssl.SSLContext, bool]] = {}
        for lst in tables.listeners:
            if lst.tls is None:
                continue
            fresh = server_context(lst.name, lst.tls, self.root, listener_alpn(lst))  # validated
            old = self._listeners.get(lst.name)
            keep = old is not None and old[0] == lst.tls
            plan[lst.name] = (lst.tls, old[1], True) if old and keep else (lst.tls, fresh, False)
        nxt = TlsContexts(
            tables, self.root, {name: (cfg, ctx) for name, (cfg, ctx, _) in plan.items()}
        )
        for name, (cfg, ctx, in_place) in plan.items():
            if in_place:
                _load_server_files(ctx, f"tls of listener {name}", cfg, self.root)
        return nxt
