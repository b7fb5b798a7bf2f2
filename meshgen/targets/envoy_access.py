"""Envoy RBAC from the access rules: deny-by-default on listeners that check client
certificates, allow-policies per route on the caller's SPIFFE URI SAN.

The policies are the runtime's own reduction of the rules (:meth:`AccessPolicy.matrix`): per
route and caller, what *every* service the route can reach permits. A named caller matches
its exact ID ``spiffe://<mesh>/<name>``; ``*`` matches any ID of the mesh (named callers'
grants include the ``*`` grants, so OR-ing the policies gives each caller exactly its row).
A path prefix covers itself and what is below it on a segment boundary, as the runtime's
``path_under``. Redirect routes and the catch-all 404 turn RBAC off: they forward nothing
and answer every caller the listener admits.

On an ``access: audit`` listener the same policies are ``shadow_rules``: nothing is refused,
Envoy counts the verdicts (``http.<listener>.rbac.audit_shadow_denied``) and a stdout access
log line names each request the rules would deny, with the caller (:func:`audit_log`).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshgen.runtime.policy.access import ANY, AccessPolicy, Grant, MatrixRow
from meshgen.runtime.policy.tls import spiffe_id
from meshgen.runtime.tables import Listener, Route, Tables

from .envoy_syntax import Json, typed

RBAC_TYPE = "envoy.extensions.filters.http.rbac.v3.RBAC"
PER_ROUTE_TYPE = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
OFF = typed(PER_ROUTE_TYPE)
"""A per-route RBAC config without rules: the filter is off for that route."""
NO_POLICY = {"action": "ALLOW", "policies": {}}
"""Rules without a policy: nothing is allowed (deny by default)."""
AUDIT_PREFIX = "audit_"
SHADOW_RESULT = f"{AUDIT_PREFIX}shadow_engine_result"
"""The dynamic metadata key of the shadow verdict (Envoy prefixes it with the stat prefix)."""


def _methods(g: Grant) -> Json | None:
    rules = [{"header": {"name": ":method", "string_match": {"exact": m}}}
             for m in sorted(g.methods)]  # fmt: skip
    if not rules:
        return None
    return rules[0] if len(rules) == 1 else {"or_rules": {"rules": rules}}


def _path(g: Grant) -> Json | None:
    p = g.prefix
    if p == "/":
        return None
    below = {"url_path": {"path": {"prefix": p if p.endswith("/") else p + "/"}}}
    if p.endswith("/"):
        return below
    return {"or_rules": {"rules": [{"url_path": {"path": {"exact": p}}}, below]}}


def permission(g: Grant) -> Json:
    parts = [x for x in (_methods(g), _path(g)) if x is not None]
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {"and_rules": {"rules": parts}}


def principal(caller: str, trust_domain: str) -> Json:
    if caller == ANY:
        match = {"prefix": f"spiffe://{trust_domain}/"}
    else:
        match = {"exact": spiffe_id(trust_domain, caller)}
    return {"authenticated": {"principal_name": match}}


def policies(rows: list[MatrixRow], trust_domain: str) -> Json:
    return {
        row.caller: {
            "permissions": [permission(g) for g in row.grants],
            "principals": [principal(row.caller, trust_domain)],
        }
        for row in rows
        if row.grants
    }


class AccessRules:
    """The per-route policies of a mesh (computed once, shared by every listener)."""

    def __init__(self, tables: Tables) -> None:
        self.trust_domain = tables.mesh.name
        self.rows: dict[str, list[MatrixRow]] = {}
        for row in AccessPolicy.from_tables(tables).matrix():
            self.rows.setdefault(row.route, []).append(row)

    def for_listener(self, lst: Listener) -> ListenerAccess:
        return ListenerAccess(self, lst.access == "audit")


@dataclass(frozen=True)
class ListenerAccess:
    """The RBAC configs of one listener: enforced, or (``audit``) shadow rules only."""

    rules: AccessRules
    audit: bool

    @property
    def mode(self) -> str:
        return "audit" if self.audit else "enforce"

    def wrap(self, rules: object) -> dict[str, object]:
        """An ``RBAC`` body holding ``rules`` as enforced rules or as shadow rules."""
        if self.audit:
            return {"shadow_rules": rules, "shadow_rules_stat_prefix": AUDIT_PREFIX}
        return {"rules": rules}

    def listener_filter(self) -> Json:
        """The connection manager's RBAC config: deny by default (audit: only counted)."""
        return typed(RBAC_TYPE, self.wrap(NO_POLICY))

    def per_route(self, r: Route) -> Json:
        """RBAC for ``r``: off for a redirect, else its allow-policies (none: deny all)."""
        if r.redirect is not None:
            return OFF
        rows = self.rules.rows.get(r.name, [])
        rules = {"action": "ALLOW", "policies": policies(rows, self.rules.trust_domain)}
        return typed(PER_ROUTE_TYPE, {"rbac": self.wrap(rules)})


def audit_log(listener: str) -> Json:
    """A stdout access log of the requests an audit listener's rules would deny."""
    fmt = (
        f"meshgen access audit: listener={listener} route=%ROUTE_NAME% "
        "caller=%DOWNSTREAM_PEER_URI_SAN% verdict=deny %REQ(:METHOD)% %REQ(:PATH)%\n"
    )
    denied = {
        "filter": "envoy.filters.http.rbac",
        "path": [{"key": SHADOW_RESULT}],
        "value": {"string_match": {"exact": "denied"}},
    }
    return {
        "name": "envoy.access_loggers.stdout",
        "filter": {"metadata_filter": {"matcher": denied}},
        "typed_config": typed(
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            {"log_format": {"text_format_source": {"inline_string": fmt}}},
        ),
    }
