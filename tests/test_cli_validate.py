"""The validate command, in process: exit codes, formats and the example campus."""

from __future__ import annotations

import json
from pathlib import Path

import relaygate.checks
from tests.conftest import AS_OF, EXAMPLE


def test_example_inventory_is_clean(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("validate", "--inventory", str(EXAMPLE), "--as-of", AS_OF)
    assert result.code == 0, result
    files = len(list((EXAMPLE / "devices").glob("*/*.yaml"))) + 3
    assert result.stdout.strip().endswith(f"{files} files checked: 0 errors, 0 warnings"), result


def test_findings_exit_1_and_text_format(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    record = next((inventory / "devices" / "libraries").glob("*.yaml"))
    text = record.read_text().replace("status: active", "status: active\nstatus: active")
    record.write_text(text)
    result = run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF)
    assert result.code == 1, result
    line = next(x for x in result.stdout.splitlines() if "yaml.duplicate-key" in x)
    dup_line = text.splitlines().index("status: active") + 2
    assert f"{record.name}:{dup_line}:1: error yaml.duplicate-key: duplicate key 'status'" in line
    assert f"first defined on line {dup_line - 1}" in line


def test_json_and_sarif_carry_the_same_findings(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    record = next((inventory / "devices" / "libraries").glob("*.yaml"))
    record.write_text(record.read_text().replace("status: active", "status: activ"))
    as_json = run_cli(
        "validate", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "json"
    )
    as_sarif = run_cli(
        "validate", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "sarif"
    )
    assert as_json.code == as_sarif.code == 1
    findings = json.loads(as_json.stdout)["findings"]
    results = json.loads(as_sarif.stdout)["runs"][0]["results"]
    assert [f["rule"] for f in findings] == [r["ruleId"] for r in results] == ["schema.enum"]
    region = results[0]["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"]) == (
        findings[0]["line"],
        findings[0]["column"],
    )


def test_github_annotations_escape_newlines(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    record = next((inventory / "devices" / "libraries").glob("*.yaml"))
    record.write_text(record.read_text().replace("status: active", 'status: active\nnote: "a\\nb"'))
    result = run_cli(
        "validate", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "github"
    )
    assert result.code == 1, result
    annotation = next(x for x in result.stdout.splitlines() if x.startswith("::error "))
    assert "title=schema.unknown-field" in annotation
    assert ",line=" in annotation and "\n" not in annotation


def test_usage_errors_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = run_cli("validate", "--inventory", str(tmp_path / "nope"))
    assert missing.code == 2, missing
    bad_date = run_cli("validate", "--inventory", str(EXAMPLE), "--as-of", "2026-13-01")
    assert bad_date.code == 2, bad_date
    bad_format = run_cli("validate", "--format", "xml")
    assert bad_format.code == 2, bad_format


def test_internal_error_fails_closed(run_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(*_args: object) -> object:
        raise ZeroDivisionError("a bug in a check")

    monkeypatch.setattr(relaygate.checks, "inventory_checks", broken)
    # Without the cache: a cached answer would not run the (patched) check at all.
    result = run_cli("validate", "--inventory", str(EXAMPLE), "--as-of", AS_OF, "--no-cache")
    assert result.code == 3, result
    assert "internal error" in result.stderr and "ZeroDivisionError" in result.stderr


def test_compile_names_what_it_removed(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    args = ("compile", "--inventory", str(EXAMPLE), "--as-of", AS_OF, "--out", str(out))
    assert run_cli(*args).code == 0
    (out / "postfix" / "leftover").write_text("x@example.edu\tOK\n")
    result = run_cli(*args)
    assert result.code == 0, result
    assert result.stdout.splitlines()[0] == "removed: postfix/leftover"
    assert not (out / "postfix" / "leftover").exists()


def test_rules_explains_an_id_and_suggests_for_a_typo(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("rules", "legacy.outside-mod")
    assert result.code == 0, result
    assert result.stdout.startswith("legacy.outside-mod (error): ")
    assert "what to do: open a Network Services ticket" in result.stdout
    result = run_cli("rules", "legacy.outside-mdo")
    assert result.code == 2, result
    assert "no rule 'legacy.outside-mdo'; did you mean legacy.outside-mod?" in result.stderr


def test_a_misspelt_field_gets_a_suggestion(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    record = inventory / "devices" / "oit" / "oit-papercut-server.yaml"
    record.write_text(record.read_text().replace("\nvolume_per_day:", "\nvolume_per_dya:"))
    result = run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF)
    assert result.code == 1
    unknown = [line for line in result.stdout.splitlines() if "schema.unknown-field" in line]
    assert len(unknown) == 1, result
    assert unknown[0].endswith(
        "unknown field 'volume_per_dya' in (top level) (did you mean 'volume_per_day'?"
        " Otherwise remove it)"
    )


def test_a_mistyped_unit_gets_a_suggestion(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    folder = inventory / "devices" / "librares"
    (inventory / "devices" / "libraries" / "lib-illiad.yaml").rename(
        folder.mkdir() or folder / "lib-illiad.yaml"
    )
    record = folder / "lib-illiad.yaml"
    record.write_text(record.read_text().replace("unit: libraries", "unit: librares"))
    result = run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF)
    assert result.code == 1, result
    (line,) = [x for x in result.stdout.splitlines() if "identity.unit-undeclared" in x]
    assert line.endswith(
        "unit 'librares' is not declared in units.yaml (did you mean 'libraries'? Otherwise"
        " declare the unit in units.yaml)"
    ), line
