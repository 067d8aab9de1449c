"""The jsonschema-rs fast path agrees with jsonschema, the reference, on every corpus.

``schema.check`` asks jsonschema-rs first and trusts only its "valid"; these
tests hold it to the reference on every document of the case corpora
(tests/cases), the hostile corpus (tests/hostile) and the example inventory,
plus documents edited to break one rule each (the positive and negative
controls that show the comparison can fail).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from relaygate import schema
from relaygate.load import load_document

ROOT = Path(__file__).resolve().parent.parent
CORPORA = (ROOT / "tests" / "cases", ROOT / "tests" / "hostile", ROOT / "inventory")
_KINDS: dict[str, schema.SchemaName] = {
    "site.yaml": "site",
    "units.yaml": "units",
    "netreg.yaml": "netreg",
}


def _documents() -> list[tuple[str, schema.SchemaName, dict[str, Any]]]:
    found = []
    for corpus in CORPORA:
        for path in sorted(corpus.rglob("*.yaml")):
            if "inventory" not in path.parts or "expected" in path.name:
                continue
            kind = _KINDS.get(path.name, "device")
            loaded = load_document(path, path.name, 64 * 1024 * 1024).document
            if loaded is not None:
                found.append((path.relative_to(ROOT).as_posix(), kind, loaded.data))
    return found


DOCUMENTS = _documents()


def _reference_valid(data: Any, kind: schema.SchemaName) -> bool:
    return not any(True for _ in schema.validator(kind).iter_errors(data))


def test_fast_path_is_installed() -> None:
    # Without it every document takes the reference path: correct, and slow.
    assert schema.fast_validator("device") is not None


def test_the_corpora_hold_valid_and_invalid_documents() -> None:
    verdicts = {_reference_valid(data, kind) for _, kind, data in DOCUMENTS}
    assert len(DOCUMENTS) > 200
    assert verdicts == {True, False}


@pytest.mark.parametrize(("path", "kind", "data"), DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_fast_path_agrees_with_the_reference(
    path: str, kind: schema.SchemaName, data: dict[str, Any]
) -> None:
    reference = _reference_valid(data, kind)
    fast = schema.fast_valid(data, kind)
    # A plain document (no floats, no huge integers) must get the same verdict;
    # one that is not plain always goes to the reference.
    expected = reference and schema._plain(data)
    assert fast == expected, f"{path}: jsonschema says {reference}, jsonschema-rs says {fast}"


def _example_record() -> dict[str, Any]:
    path = ROOT / "inventory" / "devices" / "libraries" / "lib-hodges-3f-copier.yaml"
    loaded = load_document(path, path.name, 65536).document
    assert loaded is not None
    return loaded.data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "10.20.30.400"),  # format ip-host (a custom format)
        ("address", "10.20.30.40\n"),  # an ECMA-262 '$' must not pass a trailing newline
        ("name", "Upper-Case"),  # pattern
        ("kind", "toaster"),  # enum
        ("unknown_field", "x"),  # additionalProperties
    ],
)
def test_fast_path_refuses_what_the_reference_refuses(field: str, value: Any) -> None:
    record = _example_record()
    assert schema.fast_valid(record, "device")  # positive control
    broken = copy.deepcopy(record)
    broken[field] = value
    assert not _reference_valid(broken, "device")
    assert not schema.fast_valid(broken, "device")


def test_a_float_integer_goes_to_the_reference() -> None:
    site = load_document(ROOT / "inventory" / "site.yaml", "site.yaml", 1 << 20).document
    assert site is not None
    assert _reference_valid(site.data, "site")
    assert not schema.fast_valid(site.data, "site")  # it holds a float (a share): reference only
    data = copy.deepcopy(site.data)
    data["relay"]["relay_port"] = 25.0  # an integer to JSON Schema, not to relaygate
    assert not _reference_valid(data, "site")
    assert not schema.fast_valid(data, "site")
    assert schema._plain({"port": 25}) and not schema._plain({"port": 25.0})
