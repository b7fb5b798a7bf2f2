"""Lowering of ``monitoring:``: alerts (their ``when`` parsed) and SLOs."""

from __future__ import annotations

from meshgen import builtin
from meshgen.alertexpr import AlertExprError, parse_when
from meshgen.lower.context import LowerContext
from meshgen.lower.merge import Merged
from meshgen.model import Alert, PathKey, Slo


def alerts(ctx: LowerContext, raw: list[Merged]) -> tuple[Alert, ...]:
    result = []
    for index, item in enumerate(raw):
        path: PathKey = ("monitoring", "alerts", index)
        if path in ctx.skip:
            continue
        try:
            expr = parse_when(str(item["when"]))
        except AlertExprError:
            expr = None  # reported with its position by checks.monitoring
        result.append(
            Alert(
                str(item["name"]),
                str(item["service"]),
                str(item["when"]),
                expr,
                ctx.duration(item.get("for", builtin.default("alert.for")), (*path, "for")),
                item.get("severity", builtin.default("alert.severity")),
                str(item.get("summary", "")),
                path,
            )
        )
    return tuple(result)


def slos(ctx: LowerContext, raw: list[Merged]) -> tuple[Slo, ...]:
    window = builtin.default("slo.window")
    return tuple(
        Slo(
            str(s["name"]),
            str(s["service"]),
            float(s["objective"]),
            ctx.duration(s.get("window", window), ("monitoring", "slos", i, "window")),
            ("monitoring", "slos", i),
        )
        for i, s in enumerate(raw)
        if ("monitoring", "slos", i) not in ctx.skip
    )
