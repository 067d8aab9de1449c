"""A record with a schema error in one field: its other findings in the same run, and
nothing of it in the model or the compiled output.

The corpus cases ``tests/cases/invalid/schema-error-*`` hold the exact findings; these
tests hold what the corpus cannot: what reaches compile, the cache, and the cross-record
rules around a record whose name or status is unknown.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from relaygate import pipeline
from relaygate.cache import Cache
from tests.conftest import AS_OF

DAY = dt.date.fromisoformat(AS_OF)
GATE = Path("devices") / "libraries" / "lib-gate-counter.yaml"
HODGES = Path("devices") / "libraries" / "lib-hodges-3f-copier.yaml"


def _edit(root: Path, relative: Path, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text(encoding="utf-8")
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


def _rules(loaded: pipeline.LoadedInventory, name: str) -> list[str]:
    return sorted(f.rule for f in loaded.findings if f.path.endswith(name))


def test_a_record_with_a_schema_error_never_reaches_compile_output(
    inventory: Path,
    tmp_path: Path,
    run_cli: Any,
) -> None:
    # Positive control: the record as written compiles, and its sender is in the output.
    good = tmp_path / "good"
    result = run_cli("compile", "--inventory", str(inventory), "--as-of", AS_OF, "--out", str(good))
    assert result.code == 0, result
    assert any(
        "gate-counts@lib.example.edu" in p.read_text(encoding="utf-8")
        for p in good.rglob("*")
        if p.is_file()
    )
    # A schema error in a field no check reads, and a policy finding in another field.
    _edit(inventory, GATE, "volume_per_day: 2", "volume_per_day: 0")
    _edit(inventory, GATE, "gate-counts@lib.example.edu", "ill@lib.example.edu")
    loaded = pipeline.load(inventory, DAY)
    assert _rules(loaded, "lib-gate-counter.yaml") == [
        "schema.range",
        "sender.claimed-by-account",
        "sender.owned-by-another",
    ]
    assert loaded.inventory is None
    assert not [d for d in loaded.devices if d.name == "lib-gate-counter"]
    assert not [s for s in loaded.documents if s.endswith("lib-gate-counter.yaml")]
    assert loaded.files[GATE.as_posix()].document is None
    out = tmp_path / "out"
    result = run_cli("compile", "--inventory", str(inventory), "--as-of", AS_OF, "--out", str(out))
    assert result.code == 1, result
    assert "schema.range" in result.stderr and "sender.owned-by-another" in result.stderr
    assert "nothing was written" in result.stderr
    assert not out.exists()


def test_the_cache_gives_the_same_findings_for_a_partial_record(
    inventory: Path, tmp_path: Path
) -> None:
    _edit(inventory, HODGES, "volume_per_day: 40", "volume_per_day: 0")
    _edit(inventory, HODGES, "address: 10.20.30.41", "address: 10.20.40.30")
    plain = pipeline.load(inventory, DAY, shown="inventory")
    assert _rules(plain, "lib-hodges-3f-copier.yaml") == [
        "legacy.netreg-mismatch",
        "legacy.outside-mod",
        "schema.range",
    ]
    folder = tmp_path / "cache"
    for _ in range(2):  # the first run fills the cache, the second reads it
        store = Cache(folder, b"k" * 32)
        cached = pipeline.load(inventory, DAY, shown="inventory", store=store)
        assert [f.as_text() for f in cached.findings] == [f.as_text() for f in plain.findings]
        assert cached.inventory is None


def test_stand_in_values_give_no_findings(inventory: Path) -> None:
    # Two records whose address fails its schema: no duplicate, no overlap, no
    # address or NetReg finding about the value that stands in for it.
    _edit(inventory, GATE, "address: 10.20.30.88", "address: 10.20.30.300")
    _edit(inventory, HODGES, "address: 10.20.30.41", "address: 10.20.30.300")
    loaded = pipeline.load(inventory, DAY)
    assert _rules(loaded, "lib-gate-counter.yaml") == ["address.invalid"]
    assert _rules(loaded, "lib-hodges-3f-copier.yaml") == ["address.invalid"]
    assert [f.rule for f in loaded.findings if f.is_error] == ["address.invalid"] * 2
    # Positive control: the same two records with one valid address do collide.
    _edit(inventory, GATE, "address: 10.20.30.300", "address: 10.20.30.41")
    _edit(inventory, HODGES, "address: 10.20.30.300", "address: 10.20.30.41")
    loaded = pipeline.load(inventory, DAY)
    assert "identity.duplicate-address" in _rules(loaded, "lib-gate-counter.yaml")


def test_a_share_with_a_record_of_unknown_status_is_not_called_missing(inventory: Path) -> None:
    _edit(inventory, GATE, "gate-counts@lib.example.edu", "hodges-scans@lib.example.edu")
    for relative, other in ((GATE, "lib-hodges-3f-copier"), (HODGES, "lib-gate-counter")):
        _edit(
            inventory, relative, "status: active", f"shares_senders_with: [{other}]\nstatus: active"
        )
    # Positive control: the two records share a sender and name each other.
    loaded = pipeline.load(inventory, DAY)
    assert [f.rule for f in loaded.findings if f.is_error] == []
    # The copier's status fails its schema: it is in no rule of live records, and the
    # gate counter is not told that the copier is "no live record".
    _edit(inventory, HODGES, "status: active", "status: actve")
    loaded = pipeline.load(inventory, DAY)
    assert [f.rule for f in loaded.findings if f.is_error] == ["schema.enum"]
    # Without the status error but with the copier gone, the gate counter is told.
    (inventory / HODGES).unlink()
    loaded = pipeline.load(inventory, DAY)
    assert _rules(loaded, "lib-gate-counter.yaml") == ["sender.share-not-mutual"]


def test_a_record_whose_name_fails_is_named_by_no_cross_record_finding(inventory: Path) -> None:
    _edit(inventory, GATE, "name: lib-gate-counter", "name: lib_gate_counter")
    _edit(
        inventory,
        GATE,
        "fqdn: lib-gate-counter.lib.example.edu",
        "fqdn: lib-hodges-3f-copier.lib.example.edu",
    )
    loaded = pipeline.load(inventory, DAY)
    # Its own NetReg finding is true and reported; the FQDN it shares is not, since
    # that finding would name the record by a name it does not validly have.
    assert _rules(loaded, "lib-gate-counter.yaml") == ["legacy.netreg-mismatch", "schema.pattern"]
    assert _rules(loaded, "lib-hodges-3f-copier.yaml") == []
    assert not [f for f in loaded.findings if "(invalid)" in f.message]
    # Positive control: with a valid name, both records are told of the shared FQDN.
    _edit(inventory, GATE, "name: lib_gate_counter", "name: lib-gate-counter")
    loaded = pipeline.load(inventory, DAY)
    assert _rules(loaded, "lib-hodges-3f-copier.yaml") == ["identity.duplicate-fqdn"]
