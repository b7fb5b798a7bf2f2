"""E406, W405: ``failover.backup`` chains must not form a cycle; failover needs a health signal.

A cycle is reported once, at the member written first in the file, naming every member in
chain order, with the ``backup`` of each other member as a related span.

Zone failover and a backup service act on *unhealthy* endpoints. Without a ``health_check``
(active) or ``outlier_detection`` (passive), every endpoint always counts as healthy, so the
failover a service writes can never happen (W405).
"""

from __future__ import annotations

from meshgen.checks.context import Context

W405 = "W405"


def check(ctx: Context) -> None:
    _cycles(ctx)
    _health_signal(ctx)


def _health_signal(ctx: Context) -> None:
    """W405: failover on a service whose endpoints are never found unhealthy."""
    for service in ctx.mesh.services.values():
        failover = service.failover
        if not (failover.zones or failover.backup):
            continue
        if service.health_check is not None or service.outlier_detection is not None:
            continue
        what = "zone failover" if failover.zones else f"failover to '{failover.backup}'"
        if failover.zones and failover.backup:
            what = f"zone failover and failover to '{failover.backup}'"
        ctx.warning(
            W405,
            f"service '{service.name}' has {what}, but nothing can find an endpoint unhealthy: "
            "it has neither health_check nor outlier_detection, so the failover never happens",
            failover.path,
            "add a health_check (active probes) or outlier_detection (ejects endpoints that "
            "fail live traffic), here or in defaults",
            key=True,
        )


def _cycles(ctx: Context) -> None:
    services = ctx.mesh.services
    backup = {n: s.failover.backup for n, s in services.items() if s.failover.backup in services}
    done: set[str] = set()
    order = {name: ctx.doc.span(services[name].path) for name in backup}
    for start in sorted(backup, key=order.__getitem__):
        chain: list[str] = []
        node: str | None = start
        while node is not None and node not in done and node not in chain:
            chain.append(node)
            node = backup.get(node)
        done.update(chain)
        if node is None or node not in chain:
            continue
        cycle = chain[chain.index(node) :]
        first = min(cycle, key=order.__getitem__)
        turn = cycle.index(first)
        cycle = cycle[turn:] + cycle[:turn]
        shown = " -> ".join([*cycle, first])
        paths = {n: (*services[n].failover.path, "backup") for n in cycle}
        ctx.error(
            "E406",
            f"failover backups form a cycle: {shown}",
            paths[first],
            "a backup chain must end at a service without a backup",
            related=[(paths[n], f"'{n}' fails over to '{backup[n]}'") for n in cycle[1:]],
        )
