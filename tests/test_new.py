"""relaygate new: a record that validates, or nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from relaygate import pipeline, scaffold
from relaygate.source import FolderSource
from tests.conftest import AS_OF

PLOTTER_FLAGS = [
    "--name", "eng-perkins-plotter",
    "--unit", "engineering",
    "--kind", "appliance",
    "--model", "HP DesignJet T1700",
    "--fqdn", "eng-perkins-plotter.eng.example.edu",
    "--address", "10.40.32.90",
    "--auth", "ip",
    "--sender", "plotter@eng.example.edu",
    "--volume-per-day", "3",
    "--requestor-name", "Jamie Novak",
    "--requestor-email", "jnovak@example.edu",
    "--contact-name", "Kim Tran",
    "--contact-email", "ktran@example.edu",
    "--netreg", "static-dhcp",
    "--approver", "praman@example.edu",
    "--justification",
    "The plotter's embedded web server only supports unauthenticated SMTP for"
    " job-completion notices.",
    "--approved-on", "2026-11-20",
    "--expires-on", "2027-11-19",
    "--mod-ticket", "NS-12650",
    "--acknowledgment-ref", "ACK-2026-0150",
]  # fmt: skip

PLOTTER = """\
# yaml-language-server: $schema=../../../schemas/device.schema.json
name: eng-perkins-plotter
unit: engineering
kind: appliance
model: HP DesignJet T1700
fqdn: eng-perkins-plotter.eng.example.edu
address: 10.40.32.90
auth: ip
senders:
  - plotter@eng.example.edu
volume_per_day: 3
requestor: {name: Jamie Novak, email: jnovak@example.edu}
technical_contact: {name: Kim Tran, email: ktran@example.edu}
netreg: static-dhcp
exception:
  approver: {name: Dr. Priya Raman, email: praman@example.edu, role: dean}
  justification: >-
    The plotter's embedded web server only supports unauthenticated SMTP for
    job-completion notices.
  acknowledged:
    - unauthenticated-smtp-is-legacy-and-insecure
    - service-may-be-interrupted
    - support-may-be-discontinued
  approved_on: 2026-11-20
  expires_on: 2027-11-19
  mod_ticket: NS-12650
  acknowledgment_ref: ACK-2026-0150
status: active
"""

APP_FLAGS = [
    "--name", "lib-room-booking",
    "--unit", "libraries",
    "--kind", "application",
    "--model", "Springshare LibCal",
    "--fqdn", "libcal.lib.example.edu",
    "--address", "2001:db8:1020:50::/124",
    "--auth", "oauth2",
    "--account", "svc-lib-libcal@example.edu",
    "--sender", "rooms@lib.example.edu",
    "--sender", "no-reply@lib.example.edu",
    "--volume-per-day", "120",
    "--requestor-name", "Pat O'Brien",
    "--requestor-email", "pobrien@example.edu",
    "--contact-name", "Sam Roe",
    "--contact-email", "sroe@example.edu",
]  # fmt: skip

APP = """\
# yaml-language-server: $schema=../../../schemas/device.schema.json
name: lib-room-booking
unit: libraries
kind: application
model: Springshare LibCal
fqdn: libcal.lib.example.edu
address: 2001:db8:1020:50::/124
auth: oauth2
account: svc-lib-libcal@example.edu
senders:
  - rooms@lib.example.edu
  - no-reply@lib.example.edu
volume_per_day: 120
requestor: {name: Pat O'Brien, email: pobrien@example.edu}
technical_contact: {name: Sam Roe, email: sroe@example.edu}
status: active
"""


def new(run_cli, inventory: Path, *flags: str):  # type: ignore[no-untyped-def]
    return run_cli("new", "--inventory", str(inventory), "--as-of", AS_OF, "--no-prompt", *flags)


def test_legacy_record_with_every_exception_field(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    result = new(run_cli, inventory, *PLOTTER_FLAGS, "--acknowledge-all")
    path = inventory / "devices" / "engineering" / "eng-perkins-plotter.yaml"
    assert result.code == 0, result
    assert result.stdout == f"wrote {path}\n"
    assert path.read_text() == PLOTTER
    check = run_cli("validate", "--inventory", str(inventory), "--as-of", AS_OF)
    assert check.code == 0 and "0 errors, 0 warnings" in check.stdout, check


def test_authenticated_record_with_an_ipv6_prefix(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    result = new(run_cli, inventory, *APP_FLAGS)
    assert result.code == 0, result
    assert (inventory / "devices" / "libraries" / "lib-room-booking.yaml").read_text() == APP


def test_acknowledgments_are_never_assumed(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    result = new(run_cli, inventory, *PLOTTER_FLAGS)
    assert result.code == 2, result
    assert "missing fields: --acknowledge (" in result.stderr
    partial = new(run_cli, inventory, *PLOTTER_FLAGS, "--acknowledge", "service-may-be-interrupted")
    assert partial.code == 1, partial
    assert [line.split(": ", 2)[1] for line in partial.stdout.splitlines()[:2]] == [
        "error legacy.acknowledgment-missing",
        "error legacy.acknowledgment-missing",
    ], partial
    assert "missing acknowledgment 'support-may-be-discontinued'" in partial.stdout
    assert not (inventory / "devices" / "engineering" / "eng-perkins-plotter.yaml").exists()


def test_missing_fields_are_listed_without_a_terminal(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    result = new(run_cli, inventory, "--name", "x", "--unit", "oit", "--auth", "credentials")
    assert result.code == 2, result
    assert result.stderr == (
        "relaygate: missing fields: --kind, --model, --fqdn, --address, --sender,"
        " --volume-per-day, --requestor-name, --requestor-email, --contact-name,"
        " --contact-email, --account (give them as options, or run in a terminal to be asked)\n"
    )


def test_a_record_that_does_not_validate_is_not_written(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    flags = [f if f != "10.40.32.90" else "10.40.32.91" for f in PLOTTER_FLAGS]
    result = new(run_cli, inventory, *flags, "--acknowledge-all")
    path = inventory / "devices" / "engineering" / "eng-perkins-plotter.yaml"
    assert result.code == 1, result
    assert f"{path}:7:10: error legacy.netreg-no-reservation:" in result.stdout
    assert "was not written: the inventory does not validate with it" in result.stderr
    assert not path.exists()


def test_never_overwrites(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    path = inventory / "devices" / "engineering" / "eng-perkins-plotter.yaml"
    path.write_text("# mine\n")
    result = new(run_cli, inventory, *PLOTTER_FLAGS, "--acknowledge-all")
    assert result.code == 1, result
    assert "already exists; not overwritten" in result.stderr
    assert path.read_text() == "# mine\n"


def test_approver_must_be_listed_for_the_unit(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    flags = [f if f != "praman@example.edu" else "adean@example.edu" for f in PLOTTER_FLAGS]
    result = new(run_cli, inventory, *flags, "--acknowledge-all")
    assert result.code == 2, result
    assert result.stderr == (
        "relaygate: adean@example.edu is not a listed approver of engineering; listed:"
        " praman@example.edu (Dr. Priya Raman, dean), tvarga@example.edu (Dr. Tomas Varga,"
        " department-head)\n"
    )


@pytest.mark.parametrize("name", ["../../../etc/passwd", "Upper", "a/b"])
def test_names_cannot_escape_the_devices_folder(run_cli, inventory: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    flags = [name if f == "lib-room-booking" else f for f in APP_FLAGS]
    result = new(run_cli, inventory, *flags)
    assert result.code == 2, result
    assert f"name {name!r} must be lower-case letters" in result.stderr
    assert not list(inventory.rglob("passwd"))


def test_dry_run_prints_and_writes_nothing(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    result = new(run_cli, inventory, *APP_FLAGS, "--dry-run")
    path = inventory / "devices" / "libraries" / "lib-room-booking.yaml"
    assert result.code == 0, result
    assert result.stdout == APP + f"would write {path} (dry run)\n"
    assert not path.exists()


PLOTTER_JUSTIFICATION = (
    "The plotter's embedded web server only supports unauthenticated SMTP for"
    " job-completion notices."
)
#: The answers `new --prompt` asks for after the name, for the plotter of PLOTTER.
PLOTTER_ANSWERS = [
    "engineering",  # unit (a choice from units.yaml)
    "appliance",
    "HP DesignJet T1700",
    "eng-perkins-plotter.eng.example.edu",
    "10.40.32.90",
    "ip",
    "plotter@eng.example.edu",
    "3",
    "Jamie Novak",
    "jnovak@example.edu",
    "Kim Tran",
    "ktran@example.edu",
    "static-dhcp",
    "praman@example.edu",
    PLOTTER_JUSTIFICATION,
    "2026-11-20",
    "2027-11-19",
    "NS-12650",
    "y",
    "y",
    "y",
    "ACK-2026-0150",
]


def test_prompts_for_what_is_missing(run_cli, inventory: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(PLOTTER_ANSWERS) + "\n"))
    result = run_cli(
        "new", "--inventory", str(inventory), "--as-of", AS_OF, "--prompt",
        "--name", "eng-perkins-plotter",
    )  # fmt: skip
    assert result.code == 0, result
    assert "Unit (folder under devices/) (business-office, engineering," in result.stdout
    assert "Has the approver acknowledged in writing: service may be interrupted?" in (
        result.stdout
    )
    path = inventory / "devices" / "engineering" / "eng-perkins-plotter.yaml"
    assert path.read_text() == PLOTTER


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Pat Doe", "Pat Doe"),
        ("no", '"no"'),
        ("0755", '"0755"'),
        ("@team", '"@team"'),
        ("a: b", '"a: b"'),
        ("x #y", '"x #y"'),
        ("10.20.30.41", "10.20.30.41"),
        ("2001:db8::1", "2001:db8::1"),
        ("1:30", '"1:30"'),
    ],
)
def test_scalars_read_back_exactly(value: str, expected: str) -> None:
    assert scaffold.scalar(value) == expected


def test_each_answer_is_checked_as_it_is_typed(run_cli, inventory: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A wrong answer before each of these right ones: it is refused and asked again.
    wrong = {
        "10.40.32.90": "10.40.32.300",  # not an address
        "plotter@eng.example.edu": "Plotter@eng.example.edu",  # upper case
        PLOTTER_JUSTIFICATION: "Legacy only.",  # a justification too short for a reviewer
    }
    answers = [
        "eng-perkins-2f-copier",  # taken: asked again
        "eng-perkins-plotter",
        "engineerng",  # not one of the units: asked again
        *(given for right in PLOTTER_ANSWERS for given in (wrong.get(right), right) if given),
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(answers) + "\n"))
    result = run_cli("new", "--inventory", str(inventory), "--as-of", AS_OF, "--prompt")
    assert result.code == 0, result
    # Standard input is no terminal here, so each problem follows its prompt on one line.
    problems = [
        line.split(":   ", 1)[-1] for line in result.stdout.splitlines() if "try again" in line
    ]
    assert problems == [
        "a record named 'eng-perkins-2f-copier' exists already; choose another name; try again",
        "'10.40.32.300' is not an address: "
        + str(scaffold.addresses.parse("10.40.32.300"))
        + "; try again",
        "'Plotter@eng.example.edu' is not a lower-case mail address, e.g. scans@lib.example.edu;"
        " try again",
        "12 characters, 2 distinct words; at least 40 characters and 5 distinct words are"
        " required; try again",
    ]
    assert "Error: 'engineerng' is not one of 'business-office', 'engineering'," in result.stdout
    path = inventory / "devices" / "engineering" / "eng-perkins-plotter.yaml"
    assert path.read_text() == PLOTTER


def test_a_legacy_answer_outside_every_mod_segment_is_refused_at_once(inventory: Path) -> None:
    context = scaffold.answer_context(inventory)
    # 10.40.70.40 is on campus but in no MOD segment: fine for an account, not for ip auth.
    assert (
        scaffold.answer_problem("address", "10.40.70.40", {"auth": "credentials"}, context) is None
    )
    problem = scaffold.answer_problem("auth", "ip", {"address": "10.40.70.40"}, context)
    assert problem is not None and "is in no MOD segment" in problem
    assert scaffold.answer_problem("auth", "ip", {"address": "10.40.32.90"}, context) is None
    outside = scaffold.answer_problem("address", "192.0.2.7", {}, context)
    assert outside == "192.0.2.7 is outside the campus networks in site.yaml"


def test_a_unit_typed_without_a_choice_list_gets_a_suggestion(inventory: Path) -> None:
    context = scaffold.answer_context(inventory)
    problem = scaffold.answer_problem("unit", "enginering", {}, context)
    assert problem == "unit 'enginering' is not in units.yaml; did you mean 'engineering'?"
    assert scaffold.answer_problem("unit", "engineering", {}, context) is None


def test_the_record_is_checked_in_place_without_copying_the_inventory(  # type: ignore[no-untyped-def]
    run_cli, inventory: Path, monkeypatch
) -> None:
    def no_copy(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("new copied the inventory")

    monkeypatch.setattr("shutil.copytree", no_copy)
    monkeypatch.setattr("tempfile.TemporaryDirectory", no_copy)
    # A collision with a record already there is a cross-record finding: the
    # record really is checked among the others.
    taken = [f if f != "10.40.32.90" else "10.40.32.15" for f in PLOTTER_FLAGS]
    refused = new(run_cli, inventory, *taken, "--acknowledge-all")
    assert refused.code == 1, refused
    assert "error identity.duplicate-address: address 10.40.32.15 is also used by" in refused.stdout
    # The finding on the record already there names the new one, by its path in the inventory.
    assert "eng-perkins-2f-copier.yaml:7:10: error identity.duplicate-address" in refused.stdout
    path = inventory / "devices" / "engineering" / "eng-perkins-plotter.yaml"
    assert not path.exists()
    written = new(run_cli, inventory, *PLOTTER_FLAGS, "--acknowledge-all")  # positive control
    assert written.code == 0, written
    assert path.read_text("utf-8") == PLOTTER


def test_the_overlay_lists_a_new_unit_folder_and_its_record(inventory: Path) -> None:
    overlay = pipeline.OverlaySource(
        FolderSource(inventory), {"devices/new-unit/x.yaml": b"a: 1\n"}
    )
    assert ("new-unit", "folder") in overlay.entries("devices")
    assert overlay.entries("devices/new-unit") == [("x.yaml", "file")]
    assert overlay.kind("devices/new-unit") == "folder"
    assert overlay.read("devices/new-unit/x.yaml", "x", 100) == (b"a: 1\n", [])
    data, findings = overlay.read("devices/new-unit/x.yaml", "x", 3)
    assert data is None and findings[0].rule == "file.too-large"
    relatives, _ = pipeline.discover(overlay, "inventory")
    assert "devices/new-unit/x.yaml" in relatives
    assert len(relatives) == len(pipeline.discover(FolderSource(inventory), "inventory")[0]) + 1
