"""W304, W305: retries and timeouts along caller chains.

A *caller chain* follows the access rules: ``{from: checkout, to: payments}`` says service
checkout calls payments, and a call into a service goes through the routes that send to it,
with their retries and timeout. Two mistakes only show along a chain:

* W304, retry amplification: each hop retries, so one call at the head can become the product
  of the tries of every hop at the end (2 retries at two hops: 9 requests, Istio's hidden
  default; the SRE book's advice is to retry at one layer). The chain is reported where the
  product first exceeds :data:`MAX_TRIES` -- at the access rule of that hop, with a note where
  each hop's retries are set. A chain needs at least two hops: one service's own attempts are
  what it says.
* W305, deadline inversion: a service waits for a callee longer than its own callers wait for
  it, so the callee's answer can arrive after nobody needs it. Reported at the access rule.

The checks are conservative (a missed warning is fine, a false one is not): a service reached
by several routes counts with its *fewest* tries and, for inversion, its callers' *longest*
timeout against its callee's *shortest*; a cycle of rules is followed once. ``from: "*"`` rules
name no caller, so they make no chain. Nothing is judged when a part of the spec was left out.
"""

from collections.abc import Iterator
from typing import Final

from meshgen.checks.context import Context
from meshgen.durations import format_duration
from meshgen.model import AccessRule, CallPolicy, PathKey
from meshgen.record import Record

W304 = "W304"
W305 = "W305"
MAX_TRIES: Final = 4
"""Most requests one call may become at the end of a chain (two hops of one retry each)."""


class _Inbound(Record):
    """How a service is called: its fewest tries and its shortest and longest timeouts."""

    tries: int
    tries_at: PathKey  # where the retries giving the fewest tries are written (() built-in)
    shortest: float
    shortest_at: PathKey
    longest: float
    longest_at: PathKey


def check(ctx: Context) -> None:
    mesh = ctx.mesh
    if mesh.skipped or not mesh.access:
        return
    inbound = _inbound(ctx)
    edges: dict[str, list[AccessRule]] = {}
    for rule in mesh.access:
        source, service = rule.source, rule.service
        if source not in inbound or service not in inbound or source == service:
            continue
        if all(r.service != service for r in edges.get(source, ())):  # one rule per pair
            edges.setdefault(source, []).append(rule)
    _amplification(ctx, inbound, edges)
    for caller in sorted(edges):
        for rule in edges[caller]:
            _inversion(ctx, rule, inbound[caller], inbound[rule.service])


def _tries(call: CallPolicy) -> tuple[int, PathKey]:
    retries = call.retries
    if retries is None or retries.attempts <= 0:
        return 1, ()
    origin = call.origin("retries.attempts")
    return retries.attempts + 1, origin.path or call.origin("retries").path


def _inbound(ctx: Context) -> dict[str, _Inbound]:
    """Per service that some route sends to: how calls into it behave."""
    found: dict[str, _Inbound] = {}
    for route in ctx.mesh.routes:
        for dest in route.to:
            call = dest.call
            if call is None:
                continue
            tries, tries_at = _tries(call)
            timeout, timeout_at = call.timeout_s, call.origin("timeout").path
            known = found.get(dest.service)
            if known is None:
                found[dest.service] = _Inbound(
                    tries, tries_at, timeout, timeout_at, timeout, timeout_at
                )
                continue
            fewer = tries < known.tries
            shorter = timeout < known.shortest
            longer = timeout > known.longest
            found[dest.service] = _Inbound(
                tries if fewer else known.tries,
                tries_at if fewer else known.tries_at,
                timeout if shorter else known.shortest,
                timeout_at if shorter else known.shortest_at,
                timeout if longer else known.longest,
                timeout_at if longer else known.longest_at,
            )
    return found


def _amplification(
    ctx: Context, inbound: dict[str, _Inbound], edges: dict[str, list[AccessRule]]
) -> None:
    """W304 where the product of tries along a chain first exceeds MAX_TRIES."""
    callers: dict[str, list[AccessRule]] = {}
    for rules in edges.values():
        for rule in rules:
            callers.setdefault(rule.service, []).append(rule)
    best = _best_chains(inbound, callers)
    for service in sorted(inbound):
        product, chain = best[service]
        if not chain or product <= MAX_TRIES:
            continue
        head_product = best[chain[-1].source][0]
        if head_product > MAX_TRIES:
            continue  # reported where the chain crossed the limit
        hops = [chain[0].source, *(rule.service for rule in chain)]
        shown = " x ".join(f"'{s}' {inbound[s].tries}" for s in hops)
        ctx.warning(
            W304,
            f"one call to '{hops[0]}' can become {product} requests to '{service}': the tries "
            f"of each hop multiply along the caller chain {' -> '.join(hops)} ({shown})",
            chain[-1].path,
            f"retry at one hop only (usually the one nearest the caller), or lower attempts; "
            f"more than {MAX_TRIES} requests per call turns a slow service into an outage",
            related=[
                (inbound[s].tries_at, f"calls to '{s}' make {inbound[s].tries} tries here")
                for s in hops
                if inbound[s].tries_at
            ],
        )


Chain = tuple[int, tuple[AccessRule, ...]]  # product of tries, the rules from head to end


def _best_chains(
    inbound: dict[str, _Inbound], callers: dict[str, list[AccessRule]]
) -> dict[str, Chain]:
    """Per service, the caller chain ending there with the largest product of tries.

    A depth-first walk up the callers (iterative: chains may be long); a caller already on the
    walk closes a cycle and is skipped, so every chain is a real, simple one.
    """
    best: dict[str, Chain] = {}
    walking: set[str] = set()
    for start in sorted(inbound):
        if start in best:
            continue
        walking.add(start)
        chosen: dict[str, Chain] = {start: (inbound[start].tries, ())}
        stack: list[tuple[str, Iterator[AccessRule], AccessRule | None]] = [
            (start, iter(callers.get(start, ())), None)
        ]
        while stack:
            node, pending, via = stack[-1]
            for rule in pending:
                source = rule.source
                if source in walking:
                    continue
                if source not in best:
                    walking.add(source)
                    chosen[source] = (inbound[source].tries, ())
                    stack.append((source, iter(callers.get(source, ())), rule))
                    break
                _extend(chosen, node, inbound[node].tries, best[source], rule)
            else:
                stack.pop()
                walking.discard(node)
                best[node] = chosen[node]
                if stack and via is not None:
                    parent = stack[-1][0]
                    _extend(chosen, parent, inbound[parent].tries, best[node], via)
    return best


def _extend(
    chosen: dict[str, Chain], node: str, tries: int, upstream: Chain, rule: AccessRule
) -> None:
    """Keep the chain through ``rule`` for ``node`` if it multiplies to more."""
    product = upstream[0] * tries
    if product > chosen[node][0]:
        chosen[node] = (product, (*upstream[1], rule))


def _inversion(ctx: Context, rule: AccessRule, caller: _Inbound, callee: _Inbound) -> None:
    """W305: ``rule.source`` may wait for ``rule.service`` longer than its callers wait."""
    if caller.longest >= callee.shortest:
        return
    waits, gives_up = format_duration(callee.shortest), format_duration(caller.longest)
    related = [
        (callee.shortest_at, f"calls to '{rule.service}' time out after {waits} here"),
        (caller.longest_at, f"calls to '{rule.source}' time out after {gives_up} here"),
    ]
    ctx.warning(
        W305,
        f"'{rule.source}' may wait {waits} for '{rule.service}', but its own callers give up "
        f"after {gives_up}: the answer can arrive when nobody waits for it (deadline inversion)",
        rule.path,
        f"timeouts should shrink along a caller chain: make calls to '{rule.service}' time out "
        f"well before {gives_up}, leaving time for '{rule.source}' to answer",
        related=[(path, note) for path, note in related if path],
    )
