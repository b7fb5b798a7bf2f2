"""E406: ``failover.backup`` chains must not form a cycle.

A cycle is reported once, at the member written first in the file, naming every member in
chain order, with the ``backup`` of each other member as a related span.
"""

from __future__ import annotations

from meshgen.checks.context import Context


def check(ctx: Context) -> None:
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
