"""Plan output formats (text, markdown, json), in a registry that feeds the CLI choices.

Input: a ``relaygate.plan.Plan``. Output: the whole text to print. Pure: no
file access, no clock, no environment.

The markdown format is one pull-request comment: it starts with a marker
line (so CI can find and update its own comment), then a summary (counts,
risks, approvals), then the detail folded in ``<details>``. It never exceeds
``MAX_COMMENT`` characters (GitHub refuses comments over 65,536): when the
detail does not fit, it is cut at a line boundary, every open code block and
``<details>`` is closed, and a note says how much was left out and how to see
the whole plan. Values from the inventory are shown only inside code spans
or code blocks, so a record cannot inject markup or @-mention anyone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from relaygate.findings import Finding
from relaygate.plan import (
    AccessChange,
    AccessDelta,
    FieldChange,
    Plan,
    SideSummary,
)
from relaygate.plan_types import LimitChange

PlanFormatter = Callable[[Plan], str]
PLAN_FORMATS: dict[str, PlanFormatter] = {}
#: GitHub's limit for one issue or pull-request comment, in characters.
MAX_COMMENT = 65_536
#: The first line of every markdown plan: CI updates the comment that has it.
MARKER = "<!-- relaygate-plan -->"
#: Longest line shown in markdown; longer lines are cut with a note.
MAX_LINE = 1_000
#: Rows of the summary's risk table; the rest are in the folded list.
SUMMARY_RISKS = 25
SUMMARY_REASONS = 8


def plan_format(name: str) -> Callable[[PlanFormatter], PlanFormatter]:
    def register(function: PlanFormatter) -> PlanFormatter:
        PLAN_FORMATS[name] = function
        return function

    return register


# --- shared wording ----------------------------------------------------------------


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def counts(plan: Plan) -> dict[str, int]:
    """The summary numbers, the same in every format."""
    records = [r.change for r in plan.records]
    return {
        "records_added": records.count("added"),
        "records_removed": records.count("removed"),
        "records_changed": records.count("changed"),
        "files_changed": len(plan.files),
        "devices_gaining": sum(1 for a in plan.access if any(d.senders_added for d in a.deltas)),
        "devices_losing": sum(1 for a in plan.access if any(d.senders_removed for d in a.deltas)),
        "risks": len(plan.risks),
        "approvals": len(plan.approvals),
        "artifacts_changed": len(plan.artifacts) if plan.artifacts is not None else 0,
    }


def _side_name(side: SideSummary) -> str:
    return side.label if side.commit is None else f"{side.label} ({side.commit[:12]})"


def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def field_text(change: FieldChange, code: Callable[[str], str] = str) -> str:
    """``field: before -> after``; a list of plain values as the items added and removed."""
    before, after = change.before, change.after
    if _is_scalar_list(before) and _is_scalar_list(after):
        added = [str(v) for v in after if v not in before]
        removed = [str(v) for v in before if v not in after]
        parts = []
        if added:
            parts.append("added " + ", ".join(code(v) for v in added))
        if removed:
            parts.append("removed " + ", ".join(code(v) for v in removed))
        if not parts:
            parts.append("reordered")
        return f"{code(change.field)}: {'; '.join(parts)}"
    return f"{code(change.field)}: {code(_value(before))} -> {code(_value(after))}"


def _is_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str | int | float) for v in value)


def delta_text(delta: AccessDelta, code: Callable[[str], str] = str) -> str:
    port = "port ?" if delta.port is None else f"port {delta.port}"
    login = "without login" if delta.account is None else f"as {code(delta.account)}"
    where = f"{code(delta.address)} on {port} {login}"
    if delta.change == "gained":
        return f"gains relay from {where}, senders: " + ", ".join(
            code(s) for s in delta.senders_added
        )
    if delta.change == "lost":
        return f"loses relay from {where}, senders: " + ", ".join(
            code(s) for s in delta.senders_removed
        )
    parts = []
    if delta.senders_added:
        parts.append("senders added: " + ", ".join(code(s) for s in delta.senders_added))
    if delta.senders_removed:
        parts.append("senders removed: " + ", ".join(code(s) for s in delta.senders_removed))
    return f"relay from {where}: " + "; ".join(parts)


def access_lines(change: AccessChange, code: Callable[[str], str] = str) -> list[str]:
    lines = [delta_text(d, code) for d in change.deltas]
    if change.refused_before != change.refused_after:
        if change.refused_after:
            lines.append(f"now refused by the relay ({change.refused_after})")
        else:
            lines.append(f"no longer refused by the relay (was {change.refused_before})")
    return lines


def _gain(count: int) -> str:
    return f"{_plural(count, 'device')} {'gains' if count == 1 else 'gain'}"


def _lose(count: int) -> str:
    return f"{_plural(count, 'device')} {'loses' if count == 1 else 'lose'}"


def _files_changed(c: dict[str, int], separator: str) -> str:
    if not c["files_changed"]:
        return ""
    return f"{separator}{_plural(c['files_changed'], 'inventory file')} changed"


#: Per-record limit lines a text or markdown plan shows; the json format has them all.
SHOWN_LIMITS = 25


def _per_day(value: int | None) -> str:
    return "none" if value is None else f"{value}/day"


def limit_change_text(change: LimitChange, code: Callable[[str], str] = str) -> str:
    how = f" ({change.how})" if change.how else " (no longer active)"
    return f"{code(change.device)}: {_per_day(change.before)} -> {_per_day(change.after)}{how}"


def limits_overview(plan: Plan) -> list[str]:
    """The summary lines of the plan's daily limit changes (empty when none change)."""
    summary = plan.limits_summary
    if summary is None:
        return []
    lines = []
    if summary.site_before != summary.site_after:
        lines.append(f"site volume_limits: {summary.site_before} -> {summary.site_after}")
    parts = [
        f"{count} {word}"
        for count, word in (
            (summary.raised, "raised"),
            (summary.lowered, "lowered"),
            (summary.added, "new"),
            (summary.removed, "gone"),
        )
        if count
    ]
    verb = "changes" if len(plan.limits) == 1 else "change"
    line = f"{_plural(len(plan.limits), 'limit')} {verb}"
    line += f": {', '.join(parts)}" if parts else ""
    if summary.total_before != summary.total_after:
        line += (
            f"; records active before and after: {summary.total_before} -> {summary.total_after}"
            " messages a day in total"
        )
    lines.append(line)
    return lines


def limit_lines(plan: Plan) -> list[str]:
    """The text plan's "Daily limits" section (empty when no limit changes)."""
    if plan.limits_summary is None:
        return []
    out = ["", "Daily limits:"]
    out += [f"  {line}" for line in limits_overview(plan)]
    out += [f"  {limit_change_text(c)}" for c in plan.limits[:SHOWN_LIMITS]]
    if len(plan.limits) > SHOWN_LIMITS:
        out.append(f"  ... {len(plan.limits) - SHOWN_LIMITS} more (--format json lists all)")
    return out


def summary_text(plan: Plan) -> str:
    c = counts(plan)
    return (
        f"{c['records_added']} added, {c['records_removed']} removed,"
        f" {c['records_changed']} changed"
        f"{_files_changed(c, '; ')}"
        f"; {_gain(c['devices_gaining'])} access, {_lose(c['devices_losing'])} access;"
        f" {_plural(c['risks'], 'risk')}; {_plural(c['approvals'], 'approval')} needed"
    )


def _validity(side: SideSummary) -> str:
    if side.valid:
        suffix = f" ({_plural(side.warnings, 'warning')})" if side.warnings else ""
        return f"valid{suffix}"
    return (
        f"DOES NOT VALIDATE ({_plural(side.errors, 'error')}, "
        f"{_plural(side.warnings, 'warning')})" + (f"; {side.note}" if side.note else "")
    )


KIND_TITLES = {
    "exception-approver": "exception approver",
    "unit-owners": "unit owners",
    "platform-team": "platform team",
}


# --- json ------------------------------------------------------------------------------


def _finding(finding: Finding) -> dict[str, Any]:
    return {
        "path": finding.path,
        "line": finding.line,
        "column": finding.column,
        "rule": finding.rule,
        "severity": str(finding.severity),
        "message": finding.message,
        "hint": finding.hint,
    }


def _side(side: SideSummary) -> dict[str, Any]:
    return {
        "ref": side.label,
        "commit": side.commit,
        "valid": side.valid,
        "errors": side.errors,
        "warnings": side.warnings,
        "note": side.note,
        "findings": [_finding(f) for f in side.findings],
    }


def as_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (the json format, and what tests compare)."""
    return {
        "as_of": plan.as_of.isoformat(),
        "inventory": plan.inventory,
        "base": _side(plan.base),
        "head": _side(plan.head),
        "summary": counts(plan),
        "records": [
            {
                "name": r.name,
                "unit": r.unit,
                "path": r.path,
                "change": r.change,
                "fields": [
                    {"field": f.field, "before": f.before, "after": f.after} for f in r.fields
                ],
            }
            for r in plan.records
        ],
        "files": [
            {
                "path": f.path,
                "fields": [
                    {"field": x.field, "before": x.before, "after": x.after} for x in f.fields
                ],
            }
            for f in plan.files
        ],
        "access": [
            {
                "device": a.device,
                "unit": a.unit,
                "refused_before": a.refused_before,
                "refused_after": a.refused_after,
                "changes": [
                    {
                        "address": d.address,
                        "port": d.port,
                        "account": d.account,
                        "change": d.change,
                        "senders_added": list(d.senders_added),
                        "senders_removed": list(d.senders_removed),
                    }
                    for d in a.deltas
                ],
            }
            for a in plan.access
        ],
        "artifacts": None
        if plan.artifacts is None
        else [
            {
                "path": a.path,
                "target": a.target,
                "change": a.change,
                "added": list(a.added),
                "removed": list(a.removed),
            }
            for a in plan.artifacts
        ],
        "artifacts_note": plan.artifacts_note,
        "risks": [{"id": r.id, "subject": r.subject, "message": r.message} for r in plan.risks],
        "approvals": [
            {"kind": a.kind, "who": a.who, "reasons": list(a.reasons)} for a in plan.approvals
        ],
        "limits": [
            {
                "device": c.device,
                "unit": c.unit,
                "before": c.before,
                "after": c.after,
                "how": c.how,
            }
            for c in plan.limits
        ],
        "limits_summary": None
        if plan.limits_summary is None
        else {
            "site_before": plan.limits_summary.site_before,
            "site_after": plan.limits_summary.site_after,
            "raised": plan.limits_summary.raised,
            "lowered": plan.limits_summary.lowered,
            "added": plan.limits_summary.added,
            "removed": plan.limits_summary.removed,
            "total_before": plan.limits_summary.total_before,
            "total_after": plan.limits_summary.total_after,
        },
        "mass_change": {
            "base_entries": plan.mass_change.base_entries,
            "removed_or_changed": plan.mass_change.removed_or_changed,
            "threshold": plan.mass_change.threshold,
        },
    }


@plan_format("json")
def _json(plan: Plan) -> str:
    return json.dumps(as_dict(plan), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


# --- text ------------------------------------------------------------------------------


@plan_format("text")
def _text(plan: Plan) -> str:
    out = [
        f"relaygate plan: {_side_name(plan.base)} -> {plan.head.label},"
        f" inventory {plan.inventory}, as of {plan.as_of.isoformat()}",
        f"base: {_validity(plan.base)}",
        f"working tree: {_validity(plan.head)}",
        f"summary: {summary_text(plan)}",
    ]
    if plan.risks:
        out += ["", "Risks:"]
        out += [f"  {r.id}  {r.subject}: {r.message}" for r in plan.risks]
    if plan.approvals:
        out += ["", "Approvals needed:"]
        for approval in plan.approvals:
            out.append(f"  [{KIND_TITLES[approval.kind]}] {approval.who}")
            out += [f"      {reason}" for reason in approval.reasons]
    if plan.records:
        out += ["", "Records:"]
        marks = {"added": "+", "removed": "-", "changed": "~"}
        for record in plan.records:
            out.append(f"  {marks[record.change]} {record.name} ({record.unit}) {record.path}")
            out += [f"      {field_text(f)}" for f in record.fields]
    if plan.files:
        out += ["", "Inventory files:"]
        for change in plan.files:
            out.append(f"  ~ {change.path}")
            out += [f"      {field_text(f)}" for f in change.fields]
    if plan.access:
        out += ["", "Relay access:"]
        for access in plan.access:
            out += [f"  {access.device}: {line}" for line in access_lines(access)]
    out += limit_lines(plan)
    out += ["", "Compiled artifacts:"]
    if plan.artifacts is None:
        out.append(f"  {plan.artifacts_note}")
    elif not plan.artifacts:
        out.append("  no artifact changes")
    for artifact in plan.artifacts or ():
        out.append(f"  {artifact.path} ({artifact.change})")
        out += [f"    - {line}" for line in artifact.removed]
        out += [f"    + {line}" for line in artifact.added]
    for side, title in ((plan.base, "base"), (plan.head, "working tree")):
        if side.findings:
            out += ["", f"Findings ({title}):"]
            out += [f"  {f.as_text()}" for f in side.findings]
    return "\n".join(out) + "\n"


# --- markdown ---------------------------------------------------------------------------


def code(text: str) -> str:
    """``text`` as a code span that nothing inside it can close; one line."""
    text = " ".join(str(text).splitlines())
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """Table cells: a pipe ends the cell even inside a code span unless escaped."""
    return text.replace("|", "\\|")


def _fence(lines: Sequence[str]) -> str:
    longest = 2
    for line in lines:
        run = 0
        for char in line:
            run = run + 1 if char == "`" else 0
            longest = max(longest, run)
    return "`" * (longest + 1)


class _Budget:
    """Markdown lines up to a size limit; closes what is open when it runs out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[str] = []
        self.size = 0
        self.closers: list[str] = []
        self.dropped = 0
        self.full = False

    def _reserve(self) -> int:
        # The closers and the truncation note must still fit after the last line.
        return sum(len(c) + 1 for c in self.closers) + 600

    def add(self, text: str) -> None:
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + f" [... {len(text) - MAX_LINE} more characters]"
        if self.full or self.size + len(text) + 1 + self._reserve() > self.limit:
            self.full = True
            self.dropped += 1
            return
        self.lines.append(text)
        self.size += len(text) + 1

    def open(self, text: str, closer: str) -> None:
        self.add(text)
        if not self.full:
            self.closers.append(closer)

    def close(self) -> None:
        if self.full:
            return
        closer = self.closers.pop()
        self.add(closer)

    def finish(self, note: Callable[[int], str]) -> str:
        if self.full:
            while self.closers:
                text = self.closers.pop()
                self.lines.append(text)
            self.lines += ["", note(self.dropped)]
        return "\n".join(self.lines) + "\n"


def _findings_block(budget: _Budget, title: str, side: SideSummary) -> None:
    budget.open(
        f"<details><summary>Findings in {title}: {_plural(side.errors, 'error')},"
        f" {_plural(side.warnings, 'warning')}</summary>",
        "</details>",
    )
    budget.add("")
    texts = [f.as_text() for f in side.findings]
    fence = _fence(texts)
    budget.open(fence + "text", fence)
    for text in texts:
        budget.add(text)
    budget.close()
    budget.add("")
    budget.close()


def markdown(plan: Plan, limit: int = MAX_COMMENT) -> str:
    """The plan as one pull-request comment of at most ``limit`` characters."""
    c = counts(plan)
    budget = _Budget(limit)
    add = budget.add
    add(MARKER)
    add("### relaygate plan")
    add("")
    add(
        f"Base {code(_side_name(plan.base))} → working tree · inventory {code(plan.inventory)}"
        f" · as of {plan.as_of.isoformat()}"
    )
    add("")
    add("| | |")
    add("|---|---|")
    add(
        f"| records | {c['records_added']} added · {c['records_removed']} removed ·"
        f" {c['records_changed']} changed |"
    )
    if c["files_changed"]:
        add(f"| inventory files | {c['files_changed']} changed |")
    add(f"| relay access | {_gain(c['devices_gaining'])} · {_lose(c['devices_losing'])} |")
    add(f"| risks | {'**' + str(c['risks']) + '**' if c['risks'] else '0'} |")
    add(f"| approvals needed | {c['approvals']} |")
    add("")
    for side, title in ((plan.head, "The working tree"), (plan.base, "The base")):
        if not side.valid:
            add(
                f"> **{title} does not validate** ({_plural(side.errors, 'error')}, "
                f"{_plural(side.warnings, 'warning')})."
                + (
                    " Fix it before merging; the findings are below."
                    if side is plan.head
                    else " It is still compared as far as its records load."
                )
            )
            if side.note:
                add(f"> {side.note}")
            add("")
    if plan.risks:
        add("#### Risks")
        add("")
        add("| risk | subject | detail |")
        add("|---|---|---|")
        for risk in plan.risks[:SUMMARY_RISKS]:
            add(f"| {code(risk.id)} | {cell(code(risk.subject))} | {cell(code(risk.message))} |")
        if len(plan.risks) > SUMMARY_RISKS:
            add(f"| … | {len(plan.risks) - SUMMARY_RISKS} more | see *All risks* below |")
        add("")
    if plan.approvals:
        add("#### Approvals needed")
        add("")
        for approval in plan.approvals:
            reasons = [code(r) for r in approval.reasons[:SUMMARY_REASONS]]
            if len(approval.reasons) > SUMMARY_REASONS:
                reasons.append(f"and {len(approval.reasons) - SUMMARY_REASONS} more")
            add(f"- [ ] {code(approval.who)} ({KIND_TITLES[approval.kind]}): " + "; ".join(reasons))
        add("")
    if len(plan.risks) > SUMMARY_RISKS:
        budget.open(f"<details><summary>All risks ({len(plan.risks)})</summary>", "</details>")
        add("")
        for risk in plan.risks:
            add(f"- {code(risk.id)} {code(risk.subject)}: {code(risk.message)}")
        add("")
        budget.close()
    if plan.records or plan.files:
        budget.open(
            f"<details><summary>Records: {c['records_added']} added,"
            f" {c['records_removed']} removed, {c['records_changed']} changed"
            f"{_files_changed(c, ', ')}"
            "</summary>",
            "</details>",
        )
        add("")
        marks = {"added": "added", "removed": "removed", "changed": "changed"}
        for record in plan.records:
            add(f"- {marks[record.change]} {code(record.name)} ({code(record.path)})")
            for change in record.fields:
                add(f"  - {field_text(change, code)}")
        for file_change in plan.files:
            add(f"- changed {code(file_change.path)}")
            for change in file_change.fields:
                add(f"  - {field_text(change, code)}")
        add("")
        budget.close()
    if plan.access:
        budget.open(
            f"<details><summary>Relay access: {_plural(len(plan.access), 'device')}</summary>",
            "</details>",
        )
        add("")
        for access in plan.access:
            add(f"- {code(access.device)} ({code(access.unit)})")
            for line in access_lines(access, code):
                add(f"  - {line}")
        add("")
        budget.close()
    if plan.limits_summary is not None:
        budget.open(
            f"<details><summary>Daily limits: {_plural(len(plan.limits), 'record')}</summary>",
            "</details>",
        )
        add("")
        for line in limits_overview(plan):
            add(f"- {code(line)}")
        for per_record in plan.limits[:SHOWN_LIMITS]:
            add(f"- {limit_change_text(per_record, code)}")
        if len(plan.limits) > SHOWN_LIMITS:
            add(f"- … {len(plan.limits) - SHOWN_LIMITS} more (`--format json` lists all)")
        add("")
        budget.close()
    if plan.artifacts is None:
        add(f"Compiled artifacts: {plan.artifacts_note}.")
        add("")
    elif plan.artifacts:
        budget.open(
            f"<details><summary>Compiled artifacts: {_plural(len(plan.artifacts), 'file')}"
            " changed</summary>",
            "</details>",
        )
        add("")
        body = [line for a in plan.artifacts for line in (*a.removed, *a.added)]
        fence = _fence(body)
        budget.open(fence + "diff", fence)
        for artifact in plan.artifacts:
            add(f"@@ {artifact.path} ({artifact.change}) @@")
            for line in artifact.removed:
                add(f"-{line}")
            for line in artifact.added:
                add(f"+{line}")
        budget.close()
        add("")
        budget.close()
    for side, title in ((plan.head, "the working tree"), (plan.base, "the base")):
        if side.findings:
            _findings_block(budget, title, side)

    def note(dropped: int) -> str:
        return (
            f"**This plan is truncated**: {_plural(dropped, 'more line')} did not fit in one"
            f" comment ({limit:,} characters). Run"
            f" {code(f'relaygate plan --base {plan.base.label} --format text')} for the whole"
            " plan, or read the CI job log."
        )

    return budget.finish(note)


@plan_format("markdown")
def _markdown(plan: Plan) -> str:
    return markdown(plan)
