"""The bundled JSON Schemas: valid draft 2020-12, fully mapped to rule ids, used by the examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from relaygate.rules import RULES
from relaygate.schema import RULE_BY_KEYWORD, validator
from tests.conftest import EXAMPLE, ROOT

SCHEMAS = sorted((ROOT / "schemas").glob("*.schema.json"))
#: Keywords that annotate or structure a schema; they never produce an error.
STRUCTURAL = {
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "title",
    "description",
    "examples",
    "default",
    "properties",
    "items",
}


def _keywords(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            if key in ("properties", "$defs"):
                for child in value.values():
                    _keywords(child, found)
            elif key not in ("enum", "examples", "required"):
                _keywords(value, found)
    elif isinstance(node, list):
        for item in node:
            _keywords(item, found)
    return found


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_is_valid_and_every_keyword_has_a_rule(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    unmapped = _keywords(schema, set()) - STRUCTURAL - set(RULE_BY_KEYWORD)
    assert unmapped == set(), f"keywords without a rule id: {unmapped}"
    assert {RULE_BY_KEYWORD[k] for k in RULE_BY_KEYWORD} <= set(RULES) | {"text.non-ascii"}


def test_every_example_file_names_its_schema_for_editors() -> None:
    files = [
        EXAMPLE / "site.yaml",
        EXAMPLE / "units.yaml",
        EXAMPLE / "netreg.yaml",
        *sorted((EXAMPLE / "devices").glob("*/*.yaml")),
    ]
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert target.is_file() and target.parent == ROOT / "schemas", path


def test_integers_are_integers() -> None:
    site = validator("site")
    errors = list(site.iter_errors({"relay": {"relay_port": 25.0}}))
    assert any(e.validator == "type" and list(e.path) == ["relay", "relay_port"] for e in errors)
