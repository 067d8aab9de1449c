"""One catalogue of every public id relaygate prints: rules, plan risks, review categories.

Three kinds of id reach users, CI annotations and approvals: the rule ids of
findings (``rules.RULES``), the risk ids of a plan (``plan_risks.RISKS``) and
the categories of ``relaygate review`` (``lifecycle.review.CATEGORIES``). Each
stays defined beside the code that raises it; this module lists them as one
table, each with its kind, for ``relaygate rules``. The three never share an
id (a test holds that, and that every id the code uses is listed here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from relaygate.rules import RULES

Kind = Literal["rule", "risk", "review"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One id: its kind, its level (a rule's severity, ``approval`` for a risk,
    ``action`` or ``notify`` for a review category), what it means, what to do."""

    id: str
    kind: Kind
    level: str
    summary: str
    hint: str


def catalogue() -> dict[str, Entry]:
    """Every id, rules first, then risks, then review categories, each in its own order."""
    # Imported here: ``relaygate rules`` is the only command that needs all three.
    from relaygate.lifecycle.review import ACTION, CATEGORIES  # noqa: PLC0415
    from relaygate.plan_risks import RISKS  # noqa: PLC0415

    entries = [Entry(r.id, "rule", str(r.severity), r.summary, r.hint) for r in RULES.values()]
    entries += [
        Entry(
            risk_id,
            "risk",
            "approval",
            when,
            "the plan lists the approvals it needs; the mail platform team reviews it",
        )
        for risk_id, when in RISKS.items()
    ]
    entries += [
        Entry(
            category,
            "review",
            "action" if category in ACTION else "notify",
            meaning,
            "relaygate review lists the records with what to do for each",
        )
        for category, meaning in CATEGORIES.items()
    ]
    table = {entry.id: entry for entry in entries}
    if len(table) != len(entries):  # pragma: no cover - guards the catalogue itself
        raise RuntimeError("an id is defined by two kinds in relaygate.catalogue")
    return table
