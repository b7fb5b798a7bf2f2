"""E501-E503, E505, W501-W502, W506-W508: TLS settings and the files they name.

Files are checked where they are written: a ``defaults:`` CA shared by many services is
checked (and reported) once. Relative paths resolve against the spec's folder, as docs/reference.md
says for build time. Client-side files are checked only for services whose TLS is enabled.
The checks are pure: what the file system says about each file (exists, folder, mode, identity,
a key inside a certificate) was gathered by ``source`` (:mod:`meshgen.source_files`).

HAProxy's ``crt FILE`` takes the key from FILE itself or from ``FILE.key``; it cannot be told
the ``key`` path mesh.yaml names. For every certificate the HAProxy build references (a
listener's ``cert``; a service's ``cert`` with verified mutual TLS) whose key is in neither
place, W508 says so at build time instead of ``haproxy -c`` failing later; ``meshgen certs``
writes ``<cert>.key`` links.

``subject_alt_names`` are the identities a service's endpoints must prove. With
``verify: false`` nothing is checked, so they are ignored (W507); a SPIFFE ID from another
trust domain than ``mesh.name`` is legal (federation) but is usually a typo (W506).
"""

from __future__ import annotations

from pathlib import Path

from meshgen.checks.context import Context
from meshgen.model import PathKey, Service
from meshgen.source_files import resolve

W506 = "W506"
W507 = "W507"
W508 = "W508"


class _Files:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.seen: set[PathKey] = set()

    def check(self, value: str | None, path: PathKey, what: str, is_key: bool) -> None:
        if value is None or path in self.seen:
            return
        self.seen.add(path)
        facts = self.ctx.doc.files[value]
        if facts.kind == "missing":
            self.ctx.error(
                "E501",
                f"{what} file '{value}' does not exist",
                path,
                _where_relative(self.ctx),
            )
            return
        if facts.kind == "folder":
            self.ctx.error("E501", f"{what} file '{value}' is a folder", path)
        elif is_key and facts.kind == "file" and facts.mode & 0o066:
            self.ctx.warning(
                "W502",
                f"private key '{value}' can be read or written by other users "
                f"(mode {facts.mode:04o})",
                path,
                f"chmod 600 {value}",
            )


def _where_relative(ctx: Context) -> str:
    doc = ctx.doc
    if str(doc.path) == "-":
        return "relative paths are resolved against the working directory (mesh.yaml from stdin)"
    return f"relative paths are resolved against the folder of {doc.path.name}"


def check(ctx: Context) -> None:
    files = _Files(ctx)
    for service in ctx.mesh.services.values():
        tls = service.tls
        if tls.mode == "disable":
            continue
        where = (*service.path, "tls")
        for field, what, is_key in (
            ("ca", "CA", False),
            ("cert", "certificate", False),
            ("key", "key", True),
        ):
            files.check(getattr(tls, field), service.origin(f"tls.{field}").path, what, is_key)
        if tls.mode == "mutual" and (tls.cert is None or tls.key is None):
            ctx.error(
                "E505",
                f"service '{service.name}' uses mutual TLS without a client certificate and key",
                (*where, "mode"),
                "add tls.cert and tls.key, or use mode: simple",
            )
        _subject_alt_names(ctx, service)
        if tls.mode == "mutual" and tls.verify:
            _haproxy_key(
                ctx, tls.cert, tls.key, service.origin("tls.cert").path, f"service '{service.name}'"
            )
        if not tls.verify:
            verify_path = service.origin("tls.verify").path
            if tls.insecure:
                ctx.warning(
                    "W501",
                    f"service '{service.name}' does not verify its endpoints' certificates",
                    verify_path,
                    "anyone on the path can impersonate the service; verify against a CA",
                )
            else:
                ctx.error(
                    "E503",
                    f"service '{service.name}' sets verify: false without insecure: true",
                    verify_path,
                    "turning verification off must be explicit: also set insecure: true",
                )
    for listener in ctx.mesh.listeners:
        server = listener.tls
        if server is None:
            continue
        where = (*listener.path, "tls")
        files.check(server.cert, (*where, "cert"), "certificate", False)
        files.check(server.key, (*where, "key"), "key", True)
        files.check(server.ca, (*where, "ca"), "CA", False)
        _haproxy_key(ctx, server.cert, server.key, (*where, "cert"), f"listener '{listener.name}'")
        if server.client_certificates != "none" and server.ca is None:
            ctx.error(
                "E505",
                f"listener '{listener.name}' asks for client certificates but has no CA",
                (*where, "client_certificates"),
                "add tls.ca: the CA that signs the callers' certificates",
            )


def _haproxy_key(
    ctx: Context, cert: str | None, key: str | None, path: PathKey, owner: str
) -> None:
    """W508: HAProxy loads the key of ``crt FILE`` from FILE or ``FILE.key`` only."""
    if cert is None or key is None:
        return  # E505 reports a missing one
    files = ctx.doc.files
    cert_facts, key_facts = files[cert], files[key]
    if cert_facts.kind in ("missing", "folder") or key_facts.kind == "missing":
        return  # E501
    if files[cert + ".key"].kind != "missing" or cert_facts.has_private_key:
        return
    if cert_facts.identity == key_facts.identity:
        return
    cert_file, key_file = resolve(cert, ctx.mesh.base_dir), resolve(key, ctx.mesh.base_dir)
    sidecar = cert_file.with_name(cert_file.name + ".key")
    ctx.warning(
        W508,
        f"HAProxy cannot load the key of {owner} certificate '{cert}': it is not in the file "
        f"and '{cert}.key' does not exist",
        path,
        f"HAProxy's crt loads the key from the certificate file or '<cert>.key'; run meshgen "
        f"certs (it makes that link) or: ln -s {_relative(key_file, sidecar)} {cert}.key",
    )


def _relative(target: Path, link: Path) -> str:
    """``target`` as a symlink at ``link`` should name it (relative when in the same folder)."""
    return target.name if target.parent == link.parent else str(target)


def _subject_alt_names(ctx: Context, service: Service) -> None:
    names = service.tls.subject_alt_names
    if not names:
        return
    where = service.origin("tls.subject_alt_names").path
    if not service.tls.verify:
        ctx.warning(
            W507,
            f"service '{service.name}' sets subject_alt_names but verify: false, so they are "
            "ignored",
            where,
            "with verification off no identity is checked; remove subject_alt_names or verify",
            related=[(service.origin("tls.verify").path, "verification is turned off here")],
            key=True,
        )
        return
    mesh = ctx.mesh.name
    for index, name in enumerate(names):
        if not name.lower().startswith("spiffe://"):
            continue
        rest = name[len("spiffe://") :]
        domain, _, workload = rest.partition("/")
        if domain == mesh:
            continue
        ctx.warning(
            W506,
            f"subject_alt_name '{name}' is in trust domain '{domain}', not this mesh's '{mesh}'",
            (*where, index),
            f"identities of this mesh are spiffe://{mesh}/<service>"
            + (f"; did you mean 'spiffe://{mesh}/{workload}'?" if workload else "")
            + " (ignore this for a federated trust domain)",
        )
