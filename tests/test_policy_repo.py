"""A campus's own policy repository: init, schemas, import, netreg import, list, deploy."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from relaygate import __version__, model, schema_files
from relaygate.workflow import importer, listing
from tests.conftest import AS_OF, EXAMPLE, ROOT, require
from tests.test_activity import Log, at

REPO_ARGS = ("--campus", "Test College", "--platform-team", "@tc/mail", "--as-of", AS_OF)


@pytest.fixture
def policy_repo(tmp_path: Path, run_cli) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path / "policy"
    result = run_cli("init", str(folder), *REPO_ARGS)
    assert result.code == 0, result
    return folder


# --- init ----------------------------------------------------------------------------------


def test_init_writes_a_repository_that_validates_and_compiles(
    policy_repo: Path, run_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    written = sorted(
        p.relative_to(policy_repo).as_posix() for p in policy_repo.rglob("*") if p.is_file()
    )
    assert written == [
        ".github/CODEOWNERS",
        ".github/workflows/relaygate-deploy.yml",
        ".github/workflows/relaygate-pr.yml",
        ".gitignore",
        ".gitlab-ci.yml",
        ".pre-commit-config.yaml",
        "README.md",
        "deploy/inventory.yml",
        "inventory/devices/.gitkeep",
        "inventory/netreg.yaml",
        "inventory/site.yaml",
        "inventory/units.yaml",
        "schemas/device.schema.json",
        "schemas/netreg.schema.json",
        "schemas/site.schema.json",
        "schemas/units.schema.json",
    ]
    inventory = policy_repo / "inventory"
    result = run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF)
    assert result.code == 0, result
    assert "0 errors, 0 warnings" in result.stdout
    result = run_cli(
        "compile", "--inventory", str(inventory), "--as-of", AS_OF, "--out", str(tmp_path / "o")
    )
    assert result.code == 0, result
    site = (inventory / "site.yaml").read_text()
    assert 'name: "Test College"' in site
    assert 'platform_team: "@tc/mail"' in site
    # Every top-level field of site.yaml is explained by a comment right above or beside it.
    for field in ("campus_networks", "mod_segments", "relay", "sender_domains", "policy"):
        before = site[: site.index(f"\n{field}:")]
        assert before.rstrip().splitlines()[-1].startswith("#"), field


def test_init_pins_this_version_everywhere_and_never_installs_from_source(
    policy_repo: Path,
) -> None:
    pinned = f"relaygate=={__version__}"
    for name in (
        ".github/workflows/relaygate-pr.yml",
        ".github/workflows/relaygate-deploy.yml",
        ".gitlab-ci.yml",
        ".pre-commit-config.yaml",
    ):
        text = (policy_repo / name).read_text()
        assert pinned in text or f"relaygate[deploy]=={__version__}" in text, name
        assert "pip install ." not in text, name
        assert "@@" not in text, name
    assert "@tc/mail" in (policy_repo / ".github" / "CODEOWNERS").read_text()
    # The schemas are the installed ones, byte for byte.
    for name in schema_files.NAMES:
        exported = (policy_repo / "schemas" / schema_files.file_name(name)).read_text()
        assert exported == (ROOT / "schemas" / schema_files.file_name(name)).read_text()


def test_init_refuses_a_folder_that_holds_anything(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine\n")
    result = run_cli("init", str(tmp_path / "busy"), *REPO_ARGS)
    assert result.code == 2, result
    assert "not an empty folder" in result.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("team", ["mail-platform", "@x y", "@x/../../etc"])
def test_init_refuses_a_platform_team_that_is_not_a_handle(
    tmp_path: Path, run_cli, team: str
) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("init", str(tmp_path / "p"), "--platform-team", team)
    assert result.code == 2, result
    assert "--platform-team" in result.stderr
    assert not (tmp_path / "p").exists()


# --- schemas -------------------------------------------------------------------------------


def test_stale_schemas_are_a_warning_until_exported_again(policy_repo: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    inventory = policy_repo / "inventory"
    device = policy_repo / "schemas" / "device.schema.json"
    device.write_text(device.read_text().replace('"copier"', '"kopierer"'))
    (policy_repo / "schemas" / "units.schema.json").unlink()
    result = run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF)
    assert result.code == 0, result  # a warning: editor support, not policy
    stale = [line for line in result.stdout.splitlines() if "schemas.stale" in line]
    assert len(stale) == 2, result
    assert "device.schema.json differs from the schema of relaygate" in stale[0]
    assert "units.schema.json is missing" in stale[1]
    assert stale[0].split(":")[0].endswith("schemas/device.schema.json")
    result = run_cli("schemas", "export", str(policy_repo / "schemas"))
    assert result.code == 0, result
    assert "2 schema files changed" in result.stdout
    result = run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF)
    assert "schemas.stale" not in result.stdout
    assert "0 errors, 0 warnings" in result.stdout


def test_this_repositorys_own_schemas_are_never_stale(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("validate", "--inventory", str(EXAMPLE), "--as-of", AS_OF)
    assert "schemas.stale" not in result.stdout


# --- import --------------------------------------------------------------------------------

GOOD_APP = {
    "name": "app-one",
    "unit": "example-unit",
    "kind": "application",
    "model": "Some App 2",
    "fqdn": "app-one.example.edu",
    "address": "10.5.0.9",
    "auth": "credentials",
    "account": "svc-app-one@example.edu",
    "senders": "app@example.edu notices@example.edu",
    "volume_per_day": "100",
    "requestor.name": "Pat Doe",
    "requestor.email": "pdoe@example.edu",
    "technical_contact.name": "Sam Roe",
    "technical_contact.email": "sroe@example.edu",
    "status": "active",
}
LEGACY = {
    **GOOD_APP,
    "name": "copier-1",
    "kind": "copier",
    "model": "Xerox AltaLink C8170",
    "fqdn": "copier-1.example.edu",
    "address": "10.30.0.15",
    "auth": "ip",
    "account": "",
    "senders": "scans@example.edu",
    "volume_per_day": "40",
    "netreg": "static-dhcp",
    "exception.approver.name": "Dr. Example Dean",
    "exception.approver.email": "dean@example.edu",
    "exception.approver.role": "dean",
    "exception.justification": "Firmware supports neither OAuth2 nor SMTP AUTH; replaced in FY28.",
    "exception.acknowledged": "all",
    "exception.approved_on": "2026-06-15",
    "exception.expires_on": "2027-06-15",
    "exception.mod_ticket": "NS-12345",
    "exception.acknowledgment_ref": "ACK-2026-0042",
}


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    header = header or list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(k, "") for k in header])
    return path


def with_reservation(policy_repo: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    export = policy_repo / "netreg.csv"
    export.write_text(
        "address,fqdn,type,mac\n10.30.0.15,copier-1.example.edu,static-dhcp,9c:93:4e:1a:22:41\n"
    )
    result = run_cli(
        "netreg",
        "import",
        "--inventory",
        str(policy_repo / "inventory"),
        "--csv",
        str(export),
        "--exported-on",
        AS_OF,
    )
    assert result.code == 0, result


def test_import_writes_good_rows_and_reports_bad_ones_by_row_and_column(
    policy_repo: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    with_reservation(policy_repo, run_cli)
    bad = {**LEGACY, "name": "bad-one", "senders": "SCANS@example.edu", "volume_per_day": "many"}
    header = list(LEGACY)
    table = write_csv(policy_repo / "requests.csv", [GOOD_APP, LEGACY, bad], header)
    inventory = policy_repo / "inventory"
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF)
    assert result.code == 1, result
    lines = result.stdout.splitlines()
    shown = lines[0].split(":")[0]
    assert shown.endswith("requests.csv")
    senders = header.index("senders") + 1
    volume = header.index("volume_per_day") + 1
    # ROW counts the header as row 1: the bad row is row 4.
    assert (
        f"{shown}:4:{senders}: schema.format: senders/0: 'SCANS@example.edu' has upper-case"
        " letters (write it in lower case: scans@example.edu)"
    ) in result.stdout
    assert f"{shown}:4:{volume}: import.bad-value: 'many' is not a whole number" in result.stdout
    located = [line for line in lines if re.match(rf"{re.escape(shown)}:\d+:", line)]
    assert located and all(line.startswith(f"{shown}:4:") for line in located)
    assert lines[-1] == f"{shown}: 3 rows, 2 written, 1 refused"
    devices = inventory / "devices" / "example-unit"
    assert sorted(p.name for p in devices.glob("*.yaml")) == ["app-one.yaml", "copier-1.yaml"]
    copier = (devices / "copier-1.yaml").read_text()
    assert "  acknowledged:\n    - unauthenticated-smtp-is-legacy-and-insecure\n" in copier
    assert (
        "senders:\n  - app@example.edu\n  - notices@example.edu\n"
        in (devices / "app-one.yaml").read_text()
    )
    # What was written validates as a whole, and a second import of the same rows refuses
    # to overwrite them.
    assert run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF).code == 0
    again = write_csv(policy_repo / "again.csv", [GOOD_APP], list(GOOD_APP))
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(again), "--as-of", AS_OF)
    assert result.code == 1
    assert ":2:1: import.duplicate-row: devices/example-unit/app-one.yaml is already in" in (
        result.stdout
    )


def test_import_header_problems_write_nothing(policy_repo: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    rows = [{**GOOD_APP, "sendres": "x@example.edu"}]
    table = write_csv(policy_repo / "typo.csv", rows, [*GOOD_APP, "sendres"])
    inventory = policy_repo / "inventory"
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF)
    assert result.code == 1, result
    column = len(GOOD_APP) + 1
    assert f":1:{column}: import.unknown-column: 'sendres' is not a record field;" in result.stdout
    assert "did you mean 'senders'?" in result.stdout
    assert list((inventory / "devices").rglob("*.yaml")) == []


def test_import_rows_that_collide_with_each_other_are_both_refused(
    policy_repo: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    twin = {**GOOD_APP, "name": "app-two", "fqdn": "app-two.example.edu"}  # same address
    other = {
        **GOOD_APP,
        "name": "app-three",
        "fqdn": "app-three.example.edu",
        "address": "10.5.0.10",
        "account": "svc-three@example.edu",
        "senders": "t@example.edu",
    }
    table = write_csv(policy_repo / "t.csv", [GOOD_APP, twin, other], list(GOOD_APP))
    inventory = policy_repo / "inventory"
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF)
    assert result.code == 1, result
    refused_rows = {
        line.split(":")[1]
        for line in result.stdout.splitlines()
        if "collision" in line or "duplicate" in line
    }
    assert {"2", "3"} <= refused_rows, result
    names = sorted(p.stem for p in (inventory / "devices").rglob("*.yaml"))
    assert names == ["app-three"]


def test_import_dry_run_writes_nothing(policy_repo: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    table = write_csv(policy_repo / "d.csv", [GOOD_APP], list(GOOD_APP))
    inventory = policy_repo / "inventory"
    result = run_cli(
        "import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF, "--dry-run"
    )
    assert result.code == 0, result
    assert result.stdout.splitlines()[-1].endswith("1 rows, 1 would be written, 0 refused")
    assert list((inventory / "devices").rglob("*.yaml")) == []


def test_import_columns_come_from_the_schema() -> None:
    columns = importer.columns()
    assert columns["senders"] == "array"
    assert columns["volume_per_day"] == "integer"
    assert columns["exception.approver.role"] == "string"
    assert "exception" not in columns and "requestor" not in columns
    schema = json.loads((ROOT / "schemas" / "device.schema.json").read_text())
    assert set(schema["properties"]) == {c.split(".")[0] for c in columns}


# --- netreg import -------------------------------------------------------------------------


def test_netreg_import_replaces_the_file_only_when_every_row_is_good(
    policy_repo: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    inventory = policy_repo / "inventory"
    good = policy_repo / "good.csv"
    good.write_text(
        "address,fqdn,type,mac,note\n"
        "10.30.0.16,scanner-2.example.edu,static,,lab scanner\n"
        "10.30.0.15,copier-1.example.edu,static-dhcp,9c:93:4e:1a:22:41,\n"
    )
    args = ("netreg", "import", "--inventory", str(inventory), "--exported-on", "2026-11-28")
    result = run_cli(*args, "--csv", str(good))
    assert result.code == 0, result
    assert "2 reservations (2 added, 0 removed, 0 changed); written" in result.stdout
    text = (inventory / "netreg.yaml").read_text()
    assert "exported_on: 2026-11-28\n" in text
    # Sorted by address, one per line.
    assert text.index("10.30.0.15") < text.index("10.30.0.16")
    assert run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF).code == 0
    bad = policy_repo / "bad.csv"
    bad.write_text(
        "address,fqdn,type,mac\n"
        "10.30.0.15,copier-1.example.edu,static-dhcp,9c:93:4e:1a:22:41\n"
        "10.030.0.17,odd.example.edu,static,\n"
    )
    result = run_cli(*args, "--csv", str(bad))
    assert result.code == 1, result
    assert ":3:1: " in result.stdout, result
    assert "refused, netreg.yaml unchanged" in result.stdout
    assert (inventory / "netreg.yaml").read_text() == text


# --- list ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["text", "csv", "json"])
def test_list_shows_every_record_of_the_example(run_cli, output_format: str) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "list", "--inventory", str(EXAMPLE), "--as-of", AS_OF, "--format", output_format
    )
    assert result.code == 0, result
    records = sorted((EXAMPLE / "devices").rglob("*.yaml"))
    if output_format == "json":
        listed = json.loads(result.stdout)["records"]
        assert len(listed) == len(records)
        hodges = next(r for r in listed if r["name"] == "lib-hodges-3f-copier")
        assert hodges["auth"] == "ip" and hodges["unit"] == "libraries"
        assert hodges["expires_on"] is not None
    elif output_format == "csv":
        table = list(csv.DictReader(result.stdout.splitlines()))
        assert len(table) == len(records)
        assert {row["name"] for row in table} == {p.stem for p in records}
    else:
        assert result.stdout.splitlines()[-1] == f"{len(records)} records"


# --- deploy --------------------------------------------------------------------------------


def test_deploy_runs_the_packaged_playbook(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("deploy", "--show-path")
    assert result.code == 0, result
    folder = Path(result.stdout.strip())
    assert (folder / "deploy.yml").is_file()
    assert (folder / "roles" / "relaygate").is_dir()
    out = tmp_path / "out"
    assert (
        run_cli("compile", "--inventory", str(EXAMPLE), "--as-of", AS_OF, "--out", str(out)).code
        == 0
    )
    beside = Path(sys.executable).parent / "ansible-playbook"
    require(
        beside.exists() or shutil.which("ansible-playbook") is not None,
        "ansible-playbook is not installed (pip install 'relaygate[deploy]')",
    )
    result = run_cli(
        "deploy",
        "--out",
        str(out),
        "-i",
        str(ROOT / "playbooks/inventory/example.yml"),
        "--syntax-check",
    )
    assert result.code == 0, result
    missing = run_cli("deploy", "--out", str(tmp_path / "nothing"), "--syntax-check")
    assert missing.code == 2
    assert "is not a compiled folder" in missing.stderr


def test_import_refuses_a_header_without_name_or_with_a_column_twice(
    policy_repo: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    inventory = policy_repo / "inventory"
    table = policy_repo / "h.csv"
    table.write_text("unit,kind,kind\nexample-unit,copier,mfd\n")
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF)
    assert result.code == 1, result
    assert ":1:3: import.duplicate-column: column 'kind' again" in result.stdout
    assert ":1:0: import.missing-column: no 'name' column" in result.stdout
    assert list((inventory / "devices").rglob("*.yaml")) == []


def test_import_reports_a_ragged_row_and_still_imports_the_others(
    policy_repo: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    inventory = policy_repo / "inventory"
    table = write_csv(policy_repo / "r.csv", [GOOD_APP], list(GOOD_APP))
    with open(table, "a", encoding="utf-8") as handle:
        handle.write("app-two,example-unit,application\n")
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF)
    assert result.code == 1, result
    assert f":3:0: import.ragged-row: 3 cells under a header of {len(GOOD_APP)}" in result.stdout
    assert sorted(p.stem for p in (inventory / "devices").rglob("*.yaml")) == ["app-one"]


def test_list_shows_the_day_each_device_was_last_seen(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    log = Log("smtp-relay-1")
    log.accept(at("2026-11-20 09:00:00"), "10.20.30.41", "9A2")
    log.accept(at("2026-11-21 10:00:00"), "10.20.30.41", "9A3")
    log.accept(at("2026-11-22 11:00:00"), "10.60.33.20", "9A4")
    path = inventory.parent / "relay.log"
    path.write_text(log.text())
    args = ("--inventory", str(inventory))
    assert run_cli("activity", "ingest", str(path), *args, "--year", "2026").code == 0
    result = run_cli("list", *args, "--as-of", AS_OF, "--format", "json")
    assert result.code == 0, result
    seen = {r["name"]: r["last_seen"] for r in json.loads(result.stdout)["records"]}
    assert seen["lib-hodges-3f-copier"] == "2026-11-21"
    assert seen["med-pathology-scanner"] == "2026-11-22"
    assert seen["lib-illiad"] is None  # nothing in the logs
    missing = run_cli("list", *args, "--db", str(inventory.parent / "nothing.sqlite"))
    assert missing.code == 2, missing
    assert "no activity store there" in missing.stderr


def test_import_judges_each_row_as_a_new_record_under_the_pull_request_rule(
    policy_repo: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    # No NetReg reservation: for a record already in the inventory that is a warning (the
    # relay refuses it); a row is a new record, so it is refused and not written.
    inventory = policy_repo / "inventory"
    table = write_csv(policy_repo / "l.csv", [LEGACY], list(LEGACY))
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF)
    assert result.code == 1, result
    address = list(LEGACY).index("address") + 1
    assert (
        f":2:{address}: legacy.netreg-no-reservation: NetReg has no reservation for 10.30.0.15;"
        " this change adds or edits the record"
    ) in result.stdout
    assert list((inventory / "devices").rglob("*.yaml")) == []
    # Positive control: with the reservation the same row is written.
    with_reservation(policy_repo, run_cli)
    result = run_cli("import", "--inventory", str(inventory), "--csv", str(table), "--as-of", AS_OF)
    assert result.code == 0, result
    assert [p.stem for p in (inventory / "devices").rglob("*.yaml")] == ["copier-1"]


def test_netreg_import_refuses_an_export_that_drops_most_reservations(
    inventory: Path, run_cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    before = (inventory / "netreg.yaml").read_text()
    export = tmp_path / "partial.csv"
    export.write_text(
        "address,fqdn,type,mac,note\n10.5.30.8,papercut-db.oit.example.edu,static,,\n"
    )
    args = ("netreg", "import", "--inventory", str(inventory), "--csv", str(export))
    result = run_cli(*args)
    assert result.code == 1, result
    kept = before.count("{address:")
    assert f":0:0: import.mass-removal: the export drops {kept - 1} of {kept} reservations" in (
        result.stdout
    )
    assert (inventory / "netreg.yaml").read_text() == before
    empty = tmp_path / "empty.csv"
    empty.write_text("address,fqdn,type,mac,note\n")
    assert run_cli(*args[:-1], str(empty)).code == 1
    assert (inventory / "netreg.yaml").read_text() == before
    # Said on purpose, the same export is written.
    result = run_cli(*args, "--allow-removals")
    assert result.code == 0, result
    assert f"1 reservations (0 added, {kept - 1} removed, 0 changed); written" in result.stdout


def test_list_says_when_the_relay_refuses_an_active_record(run_cli) -> None:  # type: ignore[no-untyped-def]
    # oit-dc-ups-nmc's exception expires on 2027-05-10: from that day on the relay refuses it.
    before = run_cli(
        "list", "--inventory", str(EXAMPLE), "--as-of", "2027-05-09", "--format", "json"
    )
    after = run_cli(
        "list", "--inventory", str(EXAMPLE), "--as-of", "2027-05-10", "--format", "json"
    )
    ups = {r["name"]: r for r in json.loads(before.stdout)["records"]}["oit-dc-ups-nmc"]
    assert (ups["status"], ups["lapse"]) == ("active", None)
    ups = {r["name"]: r for r in json.loads(after.stdout)["records"]}["oit-dc-ups-nmc"]
    assert (ups["status"], ups["lapse"]) == ("active", "refused: exception expired")
    assert set(listing.LAPSE_TEXT) == set(model.LAPSE_REASONS.values())
