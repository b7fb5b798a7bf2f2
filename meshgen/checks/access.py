"""E504, E506, W509: access rules and the listeners they apply on.

Rules apply only on listeners whose ``client_certificates`` is ``optional`` or ``required``
("enforced" listeners); there, everything is denied unless a rule allows it. What the rules
allow and deny there (W503, W504) is judged by :mod:`meshgen.checks.access_verdicts`, with the
runtime's own policy; it is imported only for a mesh with enforced listeners, as it loads the
runtime's table types, which cost a validate more time than every other check together.

E504: access rules with no listener that checks callers.

W509: ``access: enforce | audit`` on a listener that does not check callers, where no rule
applies, so the setting does nothing (an audit listener is a dry run: it checks callers and
forwards what the rules deny, which W504 then describes as logged rather than refused).

E506 rejects a rule path that :func:`~meshgen.runtime.codec.paths.normalize_path` changes: requests
are matched on the normalised path, so such a prefix can never match and the rule silently
allows less than it says. The runtime's path code is imported only for a mesh with access rules.
"""

from __future__ import annotations

from meshgen.checks.context import Context
from meshgen.model import Listener

E506 = "E506"
W509 = "W509"


def enforced(listener: Listener) -> bool:
    return listener.tls is not None and listener.tls.client_certificates != "none"


def check(ctx: Context) -> None:
    mesh = ctx.mesh
    if mesh.access:
        _paths(ctx)
    _modes(ctx)
    if mesh.skipped.any("listeners"):
        return  # which listeners check callers is not known
    listeners = [listener for listener in mesh.listeners if enforced(listener)]
    if mesh.access and not listeners:
        ctx.error(
            "E504",
            "access rules are set but no listener accepts client certificates",
            ("access",),
            "set tls.client_certificates: optional or required on a listener; callers are "
            "identified by their certificate",
            key=True,
        )
        return
    if not listeners or mesh.skipped:
        return  # (or the rules and routes are known only in part: no verdict on them)
    from meshgen.checks import access_verdicts

    access_verdicts.check(ctx, listeners)


def _modes(ctx: Context) -> None:
    """W509: an access mode written on a listener where no access rule applies."""
    raw = ctx.doc.data.get("listeners")
    for listener in ctx.mesh.listeners:
        index = listener.path[1] if listener.path else None
        if enforced(listener) or not isinstance(index, int) or not isinstance(raw, list):
            continue
        written = raw[index]
        if "access" not in written:
            continue
        ctx.warning(
            W509,
            f"listener '{listener.name}' sets access: {listener.access}, but it does not check "
            "callers, so no access rule applies there",
            (*listener.path, "access"),
            "access rules apply on listeners with tls.client_certificates: optional or "
            "required; set that, or remove 'access'",
        )


def _paths(ctx: Context) -> None:
    """E506: a rule path that normalisation changes can never be a prefix of a request path."""
    from meshgen.runtime.codec.paths import normalize_path

    for rule in ctx.mesh.access:
        for j, written in enumerate(rule.paths):
            normal = normalize_path(written)
            if normal == written:
                continue
            where = (*rule.path, "paths", j)
            if normal is None:
                ctx.error(
                    E506,
                    f"access path '{written}' is not a valid request path, so no request "
                    "can match it",
                    where,
                    "requests with such a path are answered 400 before access is checked; "
                    "percent-encode characters outside RFC 3986",
                )
            else:
                ctx.error(
                    E506,
                    f"access path '{written}' is not normalised, so no request can match it",
                    where,
                    f"requests are matched on their normalised path; write '{normal}'",
                )
