"""One catalogue of ids: every id the code uses is listed, and ``relaygate rules`` lists them all.

The checks read the source (a grep, not an import trace), so an id written in
a code path no test reaches is still held to the catalogue.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from relaygate import plan_risks
from relaygate.catalogue import catalogue
from relaygate.errors import InternalError
from relaygate.lifecycle.review import ACTION, CATEGORIES
from relaygate.plan_risks import RISKS
from relaygate.rules import RULES

PACKAGE = Path(__file__).resolve().parent.parent / "compiler" / "relaygate"
SOURCES = {path: path.read_text("utf-8") for path in sorted(PACKAGE.rglob("*.py"))}
#: Text shaped like a rule id that is something else, and why.
NOT_IDS = {"exception.acknowledged": "a column of the import CSV"}
_FILE_SUFFIXES = ("yaml", "json")


def _literals(pattern: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path, text in SOURCES.items():
        for match in re.finditer(pattern, text):
            found.setdefault(match.group(1), set()).add(path.relative_to(PACKAGE).as_posix())
    return found


def test_every_rule_id_written_in_the_code_is_a_rule() -> None:
    families = "|".join(sorted({rule_id.split(".")[0] for rule_id in RULES}))
    used = _literals(rf'"((?:{families})\.[a-z0-9]+(?:-[a-z0-9]+)*)"')
    assert len(used) > 50  # the pattern does find the ids
    unknown = {
        text: where
        for text, where in used.items()
        if text not in RULES and text not in NOT_IDS and not text.endswith(_FILE_SUFFIXES)
    }
    assert unknown == {}


def test_every_risk_id_written_in_the_code_is_registered_and_every_registered_one_raised() -> None:
    used = _literals(r'"(risk\.[a-z0-9-]+)"')
    assert {text for text in used if text not in RISKS} == set()
    # Raised only by the plan's risk modules (through ``new_risk``, which checks them).
    raised_in = {"plan_risks.py", "plan_limits.py"}
    assert {text: where for text, where in used.items() if not where <= raised_in} == {}
    source = "".join(SOURCES[PACKAGE / name] for name in sorted(raised_in))
    unraised = [i for i in RISKS if source.count(f'"{i}"') < 2]  # the registry, then a use
    assert unraised == []


def test_a_risk_with_an_unregistered_id_fails_closed() -> None:
    assert plan_risks.new_risk("risk.mass-change", "x", "y").id == "risk.mass-change"  # control
    with pytest.raises(InternalError):
        plan_risks.new_risk("risk.not-registered", "x", "y")


def test_every_review_category_written_in_the_review_is_a_category() -> None:
    text = (PACKAGE / "lifecycle" / "review.py").read_text("utf-8")
    used = set(re.findall(r'Item\(\s*"([a-z-]+)"', text))
    used |= set(re.findall(r'(?:category|removal) (?:=|==) "([a-z-]+)"', text))
    assert len(used) >= 6  # the patterns do find the categories
    assert used - set(CATEGORIES) == set()
    assert set(ACTION) <= set(CATEGORIES)


def test_the_catalogue_holds_all_three_kinds_without_a_shared_id() -> None:
    table = catalogue()
    assert len(table) == len(RULES) + len(RISKS) + len(CATEGORIES)
    kinds = {entry.id: entry.kind for entry in table.values()}
    assert {kinds[i] for i in RULES} == {"rule"}
    assert {kinds[i] for i in RISKS} == {"risk"}
    assert {kinds[i] for i in CATEGORIES} == {"review"}
    assert table["inactive"].level == "action"
    assert table["notify"].level == "notify"
    assert table["file.missing"].level == "error"


def test_relaygate_rules_lists_every_id_with_its_kind(run_cli: Any) -> None:
    result = run_cli("rules")
    assert result.code == 0, result
    rows = [line.split()[:2] for line in result.stdout.splitlines()]
    assert {row[0]: row[1] for row in rows} == {i: e.kind for i, e in catalogue().items()}
    explained = run_cli("rules", "risk.sender-added", "volume")
    assert explained.code == 0, explained
    assert explained.stdout.startswith("risk.sender-added (risk, approval): ")
    assert "volume (review, action): " in explained.stdout
