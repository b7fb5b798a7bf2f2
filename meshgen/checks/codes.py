"""The diagnostic codes of lowering and the semantic checks, with their titles.

docs/diagnostics.md documents each with an example (tests/diagnostics/cases).
"""

from __future__ import annotations

from meshgen.diagnostics import register

TITLES = {
    "E201": "route sends traffic to an unknown service",
    "E202": "unknown subset of a service",
    "E203": "route mirrors traffic to an unknown service",
    "E204": "listener serves an unknown route",
    "E205": "access rule names an unknown service",
    "E206": "alert or SLO watches an unknown service",
    "E207": "failover backup is an unknown service",
    "E301": "route weights do not sum to 100",
    "E302": "destination without a weight",
    "E303": "route has both or neither of `to` and `redirect`",
    "E304": "`rewrite.path_prefix` without `match.path_prefix`",
    "E305": "regex does not compile",
    "E306": "duplicate route name",
    "W301": "route shadowed by an earlier route",
    "W302": "retries can outlast the timeout",
    "E401": "invalid address",
    "E402": "invalid duration",
    "E403": "subsets on a DNS-discovered service",
    "E404": "failover zones on a DNS-discovered service",
    "E405": "DNS A/AAAA discovery without a port",
    "E406": "failover backups form a cycle",
    "E407": "two listeners or the admin server bind the same address",
    "E408": "duplicate listener name",
    "E409": "dotless DNS name without `mesh.domain`",
    "W401": "subset selects no endpoint",
    "W402": "failover zone without endpoints",
    "E501": "TLS file does not exist",
    "E502": "TLS version below 1.2",
    "E503": "`verify: false` without `insecure: true`",
    "E504": "access rules without a listener that accepts client certificates",
    "E505": "TLS certificate or CA missing for mutual TLS",
    "W501": "TLS verification turned off",
    "W502": "private key readable by other users",
    "W503": "access rules allow only part of a split route",
    "E601": "alert condition does not parse",
    "E602": "alert value does not fit its signal",
    "E603": "alert names clash",
    "E604": "SLO window outside 7d..90d",
    "E605": "SLO objective outside (0, 100)",
    "W601": "alert on a service no route reaches",
}

for _code, _title in TITLES.items():
    register(_code, _title)
