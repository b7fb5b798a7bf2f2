"""``meshgen plan`` output: text for a terminal, JSON for tools, Markdown for a pull request.

Every value shown may come from mesh.yaml (a header value, a summary, a path), so nothing a
user wrote reaches the output raw: text escapes control characters (no terminal escape
sequences), Markdown puts every written value in a code span (no links, mentions, HTML or table
breaks in a pull-request comment), JSON is JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Final

from meshgen.review.diff import Planned
from meshgen.runtime.app.table_changes import Change, count_changes

TITLES: Final = {
    "mesh": "Mesh",
    "listener": "Listeners",
    "routes": "Routes",
    "route": "Routes",
    "service": "Services",
    "access": "Access",
    "alert": "Alerts",
    "slo": "SLOs",
}
MARKDOWN_LIMIT: Final = 60_000  # characters, below GitHub's comment limit with room to spare
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def summary(planned: Sequence[Planned]) -> dict[str, int]:
    counts = {"added": 0, "removed": 0, "changed": 0}
    for item in planned:
        counts[item.change.action] += 1
    return counts


def _counts(planned: Sequence[Planned]) -> str:
    if not planned:
        return "no changes"
    parts = ", ".join(f"{n} {action}" for action, n in summary(planned).items() if n)
    return f"{count_changes([p.change for p in planned])} ({parts})"


def render_text(planned: Sequence[Planned], old: str, new: str) -> str:
    """One line per change (``  (FILE:LINE)`` where known), then a count."""
    lines = [
        printable(p.change.text()) + (f"  ({printable(p.where)})" if p.where else "")
        for p in planned
    ]
    if lines:
        lines.append("")
    lines.append(f"{printable(old)} -> {printable(new)}: {_counts(planned)}")
    return "\n".join(lines) + "\n"


def render_json(planned: Sequence[Planned], old: str, new: str) -> str:
    changes = [
        {
            "section": p.change.section,
            "subject": p.change.subject,
            "field": p.change.field,
            "action": p.change.action,
            "old": p.change.old,
            "new": p.change.new,
            "text": p.change.text(),
            "where": p.where,
        }
        for p in planned
    ]
    document = {"old": old, "new": new, "changes": changes, "summary": summary(planned)}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def code(text: str) -> str:
    """A Markdown code span holding ``text`` literally (fence longer than any backtick run)."""
    text = printable(text)
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _markdown_item(change: Change) -> str:
    if change.section == "access":
        caller, _, service = change.subject.partition(" -> ")
        return f"{code(caller)} → {code(service)} {code(change.field)}: now **{change.new}**"
    if change.section == "routes":
        return f"order {code(change.old or '')} → {code(change.new or '')}"
    head = f"{change.section} {code(change.subject)}" if change.subject else change.section
    if not change.field:
        note = f" ({code(change.new)})" if change.new else ""
        return f"{head} **{change.action}**{note}"
    field = code(change.field)
    if change.old is None:
        value = f": {code(change.new or '')}" if change.new else ""
        return f"{head}: {field} **added**{value}"
    if change.new is None:
        was = f" (was {code(change.old)})" if change.old and not change.element else ""
        return f"{head}: {field} **removed**{was}"
    return f"{head}: {field} {code(change.old)} → {code(change.new)}"


def render_markdown(planned: Sequence[Planned], old: str, new: str) -> str:
    """A pull-request comment: a heading with the count, then the changes by section, cut to
    fit a comment (GitHub takes 65,536 characters) with a count of what was left out."""
    out = [f"### meshgen plan: {_counts(planned)}", "", f"{code(old)} → {code(new)}"]
    size = sum(len(line) + 1 for line in out)
    title = ""
    for shown, p in enumerate(planned):
        lines = []
        if TITLES[p.change.section] != title:
            title = TITLES[p.change.section]
            lines += ["", f"**{title}**", ""]
        where = f" — {code(p.where)}" if p.where else ""
        lines.append(f"- {_markdown_item(p.change)}{where}")
        size += sum(len(line) + 1 for line in lines)
        if size > MARKDOWN_LIMIT:
            rest = len(planned) - shown
            out += ["", f"… and {rest} more; `meshgen plan` prints every change."]
            break
        out += lines
    return "\n".join(out) + "\n"


RENDERERS: Final = {"text": render_text, "json": render_json, "markdown": render_markdown}
