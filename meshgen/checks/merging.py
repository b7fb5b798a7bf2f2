"""E116: a policy mapping that is still incomplete once its layers are merged.

Mappings merge key by key (built-in < ``defaults:`` < service < route), so the schema
lets a service or route write part of a ``rate_limit`` or ``health_check`` and leaves the rest
to a lower layer. Lowering records each mapping no layer completed as a :class:`~meshgen.model.Gap`
(and leaves the policy out); this check reports it at the most specific layer that wrote it.
A route's lower layers are its destination services: when they supply different values for a
field the route leaves out, the route must say which one it means.
"""

from __future__ import annotations

from meshgen.checks.context import Context
from meshgen.model import Gap

INCOMPLETE = "E116"


def check(ctx: Context) -> None:
    for gap in ctx.mesh.gaps:
        message, hint = _explain(gap)
        ctx.error(INCOMPLETE, message, gap.path, hint, key=True)


def _explain(gap: Gap) -> tuple[str, str]:
    head = f"{gap.field} of {gap.owner}"
    if gap.conflict:
        shown = ", ".join(f"'{service}' {value}" for service, value in gap.conflict)
        return (
            f"{head} has no {gap.missing} of its own, and the services it sends to give "
            f"different ones ({shown})",
            f"a route has one bucket: set {gap.missing} here",
        )
    if gap.field == "health_check":
        return (
            f"{head} has none of http, tcp and grpc (not set here nor {gap.below})",
            "add 'http: {path: /healthz}', 'tcp: {}' or 'grpc: {}' here, or a health_check to "
            "defaults",
        )
    return (
        f"{head} has no {gap.missing} (not set here nor {gap.below})",
        f"add {gap.missing} here or {gap.below} (layers merge key by key: built-in < "
        "defaults < service < route)",
    )
