"""``meshgen explain`` output: aligned text for a person, JSON (the same facts) for tools.

Request headers and values come from the user and the spec, so text output escapes control
characters (:func:`~meshgen.review.plan_render.printable`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from meshgen.review.effective import ServiceReport, Setting
from meshgen.review.explain import Branch, RouteTry, SniTry, Trace
from meshgen.review.plan_render import printable


def _settings(settings: Sequence[Setting], indent: str) -> list[str]:
    """``name  value  origin FILE:LINE`` in aligned columns."""
    if not settings:
        return []
    name_width = max(len(s.name) for s in settings)
    value_width = min(40, max(len(s.value) for s in settings))
    out = []
    for s in settings:
        origin = s.origin + (f" {s.where}" if s.where else "") + (" (overlay)" if s.overlay else "")
        out.append(f"{indent}{s.name:<{name_width}}  {s.value:<{value_width}}  {origin}".rstrip())
    return out


def _at(where: str | None) -> str:
    return f"  ({where})" if where else ""


def _branch(branch: Branch, shown: set[str]) -> list[str]:
    """One destination; a service's own settings only the first time it appears."""
    name = branch.service if branch.subset is None else f"{branch.service}/{branch.subset}"
    how = "by server name" if branch.weight is None else f"weight {branch.weight}"
    out = [f"destination {name}: {how} ({branch.share:g}%){_at(branch.where)}"]
    if branch.subset_labels is not None:
        out.append(f"  subset {branch.subset}: labels {branch.subset_labels}")
    if branch.discovery is not None:
        out.append(f"  endpoints: {branch.discovery}")
    else:
        empty = "none (answers 503)" if branch.carries == "requests" else "none (closes it)"
        out.append(f"  endpoints: {', '.join(branch.endpoints) or empty}")
    if branch.preferred and branch.preferred != branch.endpoints:
        out.append(f"  while all are healthy, failover zones use: {', '.join(branch.preferred)}")
    if branch.backups:
        out.append(f"  with no healthy endpoint: backup {' -> '.join(branch.backups)}")
    if branch.policy:  # a tcp service has none: a connection is not a request
        out.append("  per-request policy:")
        out += _settings(branch.policy, "    ")
    if branch.service in shown:
        out.append(f"  service {branch.service}: as above")
    else:
        shown.add(branch.service)
        out.append(f"  service {branch.service}:")
        out += _settings(branch.service_policy, "    ")
    return out


def _in_order(title: str, rows: Sequence[tuple[str, str | None, str]]) -> list[str]:
    """What the runtime tried, in its order: ``N. name  FILE:LINE  verdict``."""
    width = max(len(name) for name, _, _ in rows)
    out = ["", title]
    for i, (name, where, verdict) in enumerate(rows, start=1):
        at = f"{where}  " if where else ""
        out.append(f"  {i}. {name:<{width}}  {at}{verdict}")
    return out


def _route_verdict(r: RouteTry) -> str:
    if not r.tried:
        return "not tried: an earlier route matched"
    return "no match: " + "; ".join(r.failed) if r.failed else "MATCH"


def _sni_verdict(t: SniTry) -> str:
    if not t.tried:
        return "not tried: an earlier pattern matched"
    return f"MATCH -> {t.service}" if t.matched else "no match"


def render_trace_text(trace: Trace) -> str:
    req = trace.request
    out = [f"request   {req.method} {req.target}"]
    for name, value in req.headers:
        out.append(f"          {name}: {value}")
    out.append(f"caller    {req.caller or '(no client certificate)'}")
    out.append(f"host      {trace.host}")
    if trace.protocol == "http":
        out.append(f"path      {trace.path if trace.path is not None else '(invalid)'}")
    elif trace.server_name is not None:
        out.append(f"sni       {trace.server_name}  (the TLS server name: the request's host)")
    out.append(f"listener  {trace.listener}: {trace.listener_note}{_at(trace.listener_where)}")
    if trace.sni:
        title = "sni patterns, in order (an exact name, then the longest *. suffix):"
        out += _in_order(title, [(t.pattern, t.where, _sni_verdict(t)) for t in trace.sni])
    if trace.routes:
        title = "routes, in order (the first match wins):"
        out += _in_order(title, [(r.name, r.where, _route_verdict(r)) for r in trace.routes])
    out += ["", f"outcome   {trace.outcome}"]
    if trace.route is not None:
        out.append(f"route     {trace.route}{_at(trace.route_where)}")
    if trace.access is not None:
        out.append(f"access    {trace.access.reason}")
        lead = "by" if trace.access.allowed else "rule"
        out += [f"          {lead} {rule}" for rule in trace.access.rules]
    if trace.mirror is not None:
        out.append(f"mirror    {trace.mirror}")
    if trace.route_policy:
        out += ["", "route policy:"]
        out += _settings(trace.route_policy, "  ")
    shown: set[str] = set()
    for branch in trace.branches:
        out.append("")
        out += _branch(branch, shown)
    return "\n".join(printable(line) for line in out) + "\n"


def render_service_text(report: ServiceReport) -> str:
    out = [f"service {report.name}  ({report.where})"]
    if report.endpoints:
        out.append("endpoints:")
        width = max(len(a) for a, _, _ in report.endpoints)
        out += [f"  {a:<{width}}  {facts}  ({w})" for a, facts, w in report.endpoints]
    if report.subsets:
        out.append("subsets:")
        width = max(len(n) for n, _, _ in report.subsets)
        out += [f"  {n:<{width}}  {labels}  ({w})" for n, labels, w in report.subsets]
    out.append("settings:")
    out += _settings(report.settings, "  ")
    out.append("routes sending to it:")
    out += [f"  {r}" for r in report.routes] or ["  none"]
    out.append("access rules for it:")
    out += [f"  {r}" for r in report.access] or ["  none"]
    return "\n".join(printable(line) for line in out) + "\n"


def render_json(report: Trace | ServiceReport) -> str:
    return json.dumps(dataclasses.asdict(report), indent=2, ensure_ascii=False) + "\n"
