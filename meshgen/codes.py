"""Every diagnostic code meshgen reports, with its one-line title: the one registry.

Stages refer to codes by their string (``"E201"``); tests/unit/test_codes.py checks that every
code written in meshgen/ is listed here, that every code listed here is reported somewhere and
that docs/diagnostics.md documents each with this title. Codes are stable: a retired code is
removed here and never reused for another meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # loading and YAML (meshgen.source)
        "E001": "the file cannot be read",
        "E002": "the file is too large",
        "E003": "the file is not valid UTF-8 text",
        "E004": "invalid YAML syntax",
        "E005": "the file is empty",
        "E006": "more than one YAML document",
        "E007": "the document is not a mapping",
        "E008": "duplicate mapping key",
        "E009": "aliases expand to too many nodes",
        "E010": "recursive alias",
        "E011": "nesting too deep",
        "E012": "merge keys are not supported",
        "E013": "mapping key is not a plain value",
        "E014": "unsupported YAML tag",
        "E015": "number is infinite, NaN or too large",
        # schema (meshgen.schema) and merging (meshgen.checks.merging)
        "E101": "unknown field",
        "E102": "value of the wrong type",
        "E103": "not a duration",
        "E104": "not a valid name",
        "E105": "not a host:port address",
        "E106": "number out of range",
        "E107": "not one of the allowed values",
        "E108": "missing required field",
        "E109": "exactly one of several fields is needed",
        "E110": "value of the wrong form",
        "E111": "fields that exclude each other",
        "E112": "unsupported spec version",
        "E113": "duplicate list item",
        "E114": "empty list, mapping or string",
        "E115": "control character or line break in a value",
        "E116": "policy field missing after merging",
        # unresolved references (meshgen.checks.references)
        "E201": "route sends traffic to an unknown service",
        "E202": "unknown subset of a service",
        "E203": "route mirrors traffic to an unknown service",
        "E204": "listener serves an unknown route",
        "E205": "access rule names an unknown service",
        "E206": "alert or SLO watches an unknown service",
        "E207": "failover backup is an unknown service",
        "E208": "tcp listener forwards to an unknown service",
        # routes and traffic
        "E301": "weights do not sum to 100",
        "E302": "destination without a weight",
        "E303": "route has both or neither of `to` and `redirect`",
        "E304": "`rewrite.path_prefix` without `match.path_prefix`",
        "E305": "regex does not compile",
        "E306": "duplicate route name",
        "W301": "route shadowed by an earlier route",
        "W302": "retries can outlast the timeout",
        "W303": "route served by no listener",
        "W304": "retries multiply along a caller chain",
        "W305": "timeout longer than the caller's own (deadline inversion)",
        # discovery, addresses, failover and timer limits (meshgen.lower, meshgen.checks)
        "E401": "invalid address",
        "E402": "invalid duration",
        "E403": "subsets on a DNS-discovered service",
        "E404": "failover zones on a DNS-discovered service",
        "E405": "DNS A/AAAA discovery without a port",
        "E406": "failover backups form a cycle",
        "E407": "two listeners or the admin server bind the same address",
        "E408": "duplicate listener name",
        "E409": "dotless DNS name without `mesh.domain`",
        "E410": "interval or timeout of zero",
        "E411": "duration longer than 24 days",
        "E412": "retry backoff base longer than its max",
        "E413": "`port` with SRV discovery",
        "W401": "subset selects no endpoint",
        "W402": "failover zone without endpoints",
        "W403": "health check timeout longer than its interval",
        "W404": "static endpoint listed twice",
        "W405": "failover without a health signal",
        # TLS and access
        "E501": "TLS file does not exist",
        "E502": "TLS version below 1.2",
        "E503": "`verify: false` without `insecure: true`",
        "E504": "access rules without a listener that accepts client certificates",
        "E505": "TLS certificate or CA missing for mutual TLS",
        "E506": "access rule path is not normalised",
        "W501": "TLS verification turned off",
        "W502": "private key readable by other users",
        "W503": "access rules allow only part of a split route",
        "W504": "listener checks callers but no access rule allows anything there",
        "W506": "SPIFFE subject_alt_name outside the mesh's trust domain",
        "W507": "subject_alt_names ignored because verify is false",
        "W508": "certificate key HAProxy cannot find",
        "W509": "access mode on a listener that does not check callers",
        "W510": "access rules bypassed by a listener that does not check callers",
        # monitoring
        "E601": "alert condition does not parse",
        "E602": "alert value does not fit its signal",
        "E603": "alert names clash",
        "E604": "SLO window outside 7d..90d",
        "E605": "SLO objective outside (0, 100)",
        "W601": "alert on a service no route reaches",
        "W602": "cert_expiry alert on a service without certificate files",
        "W603": "SLO objective below 50 (a ratio written instead of a percent)",
        # what a target named with --target cannot express (meshgen.targets.gaps)
        "W701": "a target named with --target cannot express a field",
        # protocols: tcp services and listeners (meshgen.checks.protocols)
        "E801": "HTTP-only field on a tcp service",
        "E802": "route sends or mirrors requests to a tcp service",
        "E803": "listener field for the other protocol",
        "E804": "tcp listener needs exactly one of `to` and `sni`",
        "E805": "`sni` passthrough on a listener with `tls`",
        "E806": "tcp listener forwards to a service that is not tcp",
        "E807": "tcp service hashes on a header or cookie",
        "E808": "health check the probed port cannot answer",
        "E809": "failover backup speaks another protocol",
        "E810": "access rule with methods or paths for a tcp service",
        "E811": "request-signal alert or SLO on a tcp service",
        "W801": "listener limit without effect on its protocol",
    }
)
"""Code -> title; ranges as docs/diagnostics.md describes them."""
