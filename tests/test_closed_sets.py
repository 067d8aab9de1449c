"""Closed value sets are written once, in the schemas; code that lists one agrees with it.

A value added only to the schema (a new status reason, say) must be caught
here, not by a crash while rendering or editing.
"""

from __future__ import annotations

import pytest

from relaygate import model, scaffold, schema
from relaygate.errors import InternalError
from relaygate.lifecycle import edit
from relaygate.render import postfix

PROPERTIES = "properties"
APPROVER = ("$defs", "approver", PROPERTIES, "role")


def test_model_enums_are_the_schema_sets() -> None:
    assert {k.value for k in model.Kind} == set(schema.values("device", PROPERTIES, "kind"))
    assert {a.value for a in model.Auth} == set(schema.values("device", PROPERTIES, "auth"))
    assert {s.value for s in model.Status} == set(schema.values("device", PROPERTIES, "status"))
    assert {r.value for r in model.Role} == set(schema.values("device", *APPROVER))
    assert {r.value for r in model.Role} == set(schema.values("units", *APPROVER))


def test_every_status_reason_has_reply_text_and_editors_offer_only_schema_reasons() -> None:
    reasons = set(schema.values("device", PROPERTIES, "status_reason"))
    assert "spam" in reasons  # positive control: the pointer reaches the set
    assert reasons <= set(postfix.REASONS), "a reason without a reply text would crash rendering"
    assert set(model.LAPSE_REASONS.values()) <= set(postfix.REASONS)
    assert set(scaffold.STATUS_REASONS) == reasons
    assert set(edit.REVOKE_REASONS) <= reasons
    assert set(edit.RETIRE_REASONS) <= reasons
    assert set(scaffold.NETREG_TYPES) == set(schema.values("device", PROPERTIES, "netreg"))


def test_a_pointer_without_a_closed_set_is_an_internal_error() -> None:
    with pytest.raises(InternalError):
        schema.values("device", PROPERTIES, "name")
