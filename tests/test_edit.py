"""revoke, retire and renew: in-place edits that keep every other byte, then re-validate.

Every record of the example campus is edited; the lines that differ must be
exactly the edited keys' lines, and the edited inventory must validate. A
revoked device is then compiled: it must come out as an explicit reject in
the Postfix maps and a drop in the relay firewall.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from relaygate.lifecycle import edit
from relaygate.pipeline import display_path, validate
from tests.conftest import AS_OF

TODAY = dt.date.fromisoformat(AS_OF)
STATUS_LINE = re.compile(r"^(status|status_reason|status_date|status_ticket): \S")
TERM_LINE = re.compile(r"^  (approved_on|expires_on): \d{4}-\d{2}-\d{2}$")


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str], int]:
    """Lines removed, lines added, lines kept (byte for byte)."""
    old, new = before.split("\n"), after.split("\n")
    removed: list[str] = []
    added: list[str] = []
    kept = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            kept += i2 - i1
        else:
            removed += old[i1:i2]
            added += new[j1:j2]
    return removed, added, kept


def _records(inventory: Path) -> list[Path]:
    return sorted((inventory / "devices").glob("*/*.yaml"))


Operation = Callable[[str], str]
OPERATIONS: dict[str, tuple[Operation, re.Pattern[str]]] = {
    "revoke": (lambda text: edit.revoke(text, "compromised", "SEC-9001", TODAY), STATUS_LINE),
    "retire": (lambda text: edit.retire(text, "inactive", TODAY), STATUS_LINE),
    "renew": (
        lambda text: edit.renew(text, TODAY, TODAY + dt.timedelta(days=366), TODAY, 366),
        TERM_LINE,
    ),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_record_keeps_every_other_line_and_validates(inventory: Path, operation: str) -> None:
    apply, allowed = OPERATIONS[operation]
    edited = 0
    for path in _records(inventory):
        before = path.read_text()
        try:
            after = apply(before)
        except edit.EditError as refused:
            # Only states the procedure forbids are refused, never a layout.
            assert re.search(r"retired|revoked|no exception", str(refused)), (path, refused)
            continue
        removed, added, kept = _changed_lines(before, after)
        assert all(allowed.match(line) for line in removed + added), (path, removed, added)
        assert kept == len(before.split("\n")) - len(removed), path
        assert added, path
        edit.write_atomic(path, after)
        edited += 1
    # Every live record can be retired, every live record that is not revoked already
    # revoked (a second revocation would overwrite the first), every live legacy record renewed.
    assert edited == {"revoke": 32, "retire": 33, "renew": 15}[operation]
    result = validate(inventory, TODAY)
    assert [f.as_text() for f in result.findings if f.is_error] == []


RECORD = (
    "# yaml-language-server: $schema=../../../schemas/device.schema.json\n"
    "# A record written by hand, not by a tool: unusual but valid layout.\n"
    "name: lib-hodges-3f-copier\n"
    "unit: libraries\n"
    "kind: copier\n"
    "model: Xerox AltaLink C8170\n"
    "fqdn: lib-hodges-3f-copier.lib.example.edu\n"
    "address: 10.20.30.41\n"
    "auth: ip\n"
    "senders:\n"
    "- hodges-scans@lib.example.edu      # not indented: a dumper would change this line\n"
    "volume_per_day: 40\n"
    "requestor: {name: Pat Doe, email: pdoe@example.edu}\n"
    "technical_contact:\n"
    "    name: Sam Roe\n"
    "    email: sroe@example.edu\n"
    "netreg: static-dhcp\n"
    "exception:\n"
    "  approver: {name: Dr. Alex Dean, email: adean@example.edu, role: dean}\n"
    "  justification: >-\n"
    "    Firmware on this AltaLink is no longer updated by the vendor and supports neither"
    " OAuth2 nor SMTP AUTH; replacement is budgeted for FY28.\n"
    "  acknowledged: [unauthenticated-smtp-is-legacy-and-insecure, service-may-be-interrupted,"
    " support-may-be-discontinued]\n"
    "  approved_on: '2026-06-15'   # signed in person\n"
    "  expires_on: 2027-06-15\n"
    "  mod_ticket: NS-12345\n"
    "  acknowledgment_ref: ACK-2026-0001\n"
    "\n"
    "status: active   # reviewed every June\n"
)


def test_revoke_keeps_comments_and_layout_byte_for_byte() -> None:
    after = edit.revoke(RECORD, "phishing", "SEC-4501", TODAY)
    assert after == RECORD.replace(
        "status: active   # reviewed every June\n",
        "status: revoked   # reviewed every June\n"
        "status_reason: phishing\n"
        "status_date: 2026-11-29\n"
        "status_ticket: SEC-4501\n",
    )


def test_renew_replaces_only_the_two_dates() -> None:
    after = edit.renew(RECORD, dt.date(2026, 11, 20), dt.date(2027, 11, 20), TODAY, 366)
    assert after == RECORD.replace(
        "  approved_on: '2026-06-15'   # signed in person\n  expires_on: 2027-06-15\n",
        "  approved_on: 2026-11-20   # signed in person\n  expires_on: 2027-11-20\n",
    )


def test_retire_drops_the_ticket_of_an_earlier_status(inventory: Path) -> None:
    path = inventory / "devices/medicine/med-clinic-copier.yaml"
    before = path.read_text()
    after = edit.retire(before, "request", TODAY)
    assert after == before.replace(
        "status: suspended\nstatus_reason: investigation\nstatus_date: 2026-11-24\n"
        "status_ticket: SEC-4478\n",
        "status: retired\nstatus_reason: request\nstatus_date: 2026-11-29\n",
    )
    assert "# Suspended while Security looks into a burst of bounces" in after


@pytest.mark.parametrize(
    ("text", "call", "message"),
    [
        (
            RECORD.replace("exception:\n  approver: {", "exception: {approver: {"),
            "renew",
            "cannot be parsed",
        ),
        (
            "name: x\nexception: {approved_on: 2026-06-15, expires_on: 2027-06-15}\n"
            "status: active\n",
            "renew",
            "flow style",
        ),
        ("name: x\nstatus: >-\n  active\n", "revoke", "block scalar"),
        ("name: x\nstatus: retired\n", "revoke", "retired: it grants nothing"),
        ("name: x\nstatus: active\n", "renew", "no exception to renew"),
    ],
)
def test_unsafe_or_forbidden_edits_are_refused(text: str, call: str, message: str) -> None:
    with pytest.raises(edit.EditError, match=message):
        if call == "renew":
            edit.renew(text, TODAY, TODAY + dt.timedelta(days=30), TODAY, 366)
        else:
            edit.revoke(text, "spam", "SEC-1", TODAY)


@pytest.mark.parametrize(
    ("value", "written"),
    [("SEC-4412", "SEC-4412"), ("no", '"no"'), ("12345", '"12345"'), ("a: b", '"a: b"')],
)
def test_scalars_are_quoted_when_yaml_would_read_them_otherwise(value: str, written: str) -> None:
    assert edit.scalar(value) == written
    assert (
        edit.apply("status: active\n", [edit.Change(("x",), value)])
        == f"status: active\nx: {written}\n"
    )


def test_revoke_command_compiles_to_a_reject_and_a_firewall_drop(
    inventory: Path,
    run_cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    path = inventory / "devices/libraries/lib-hodges-3f-copier.yaml"
    path.chmod(0o640)
    result = run_cli(
        "revoke",
        "lib-hodges-3f-copier",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--reason",
        "spam",
        "--ticket",
        "SEC-4500",
    )
    assert result.code == 0, result
    assert "+status: revoked\n+status_reason: spam\n+status_date: 2026-11-29\n" in result.stdout
    assert "37 files checked: 0 errors, 0 warnings" in result.stdout, result
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    result = run_cli(
        "revoke",
        "lib-illiad",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--reason",
        "compromised",
        "--ticket",
        "SEC-4501",
        "--date",
        "2026-11-28",
    )
    assert result.code == 0, result
    assert (
        "status_date: 2026-11-28" in (inventory / "devices/libraries/lib-illiad.yaml").read_text()
    )
    out = tmp_path / "out"
    result = run_cli("compile", "--inventory", str(inventory), "--as-of", AS_OF, "--out", str(out))
    assert result.code == 0, result
    refused = (out / "postfix/refused_clients").read_text()
    assert "10.20.30.41\tREJECT relay access revoked: sent spam (SEC-4500)\n" in refused
    assert "10.20.50.16\tREJECT relay access revoked: " in refused
    assert (
        "svc-lib-illiad@example.edu\tREJECT relay access revoked: "
        in (out / "postfix/refused_logins").read_text()
    )
    assert "10.20.30.41" not in (out / "postfix/legacy_clients").read_text()
    nft = (out / "nftables/relay.nft").read_text()
    revoked = nft[nft.index("set revoked_v4 {") : nft.index("set revoked_v6 {")]
    legacy = nft[nft.index("set legacy_v4 {") : nft.index("set legacy_v6 {")]
    assert '10.20.30.41/32 comment "lib-hodges-3f-copier"' in revoked
    assert '10.20.50.16/32 comment "lib-illiad"' in revoked
    assert "10.20.30.41/32" not in legacy
    assert "tcp dport { 25, 587 } ip saddr @revoked_v4 drop" in nft


def test_an_edit_that_breaks_the_record_is_not_written(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    path = inventory / "devices/libraries/lib-illiad.yaml"
    before = path.read_bytes()
    result = run_cli(
        "revoke",
        "lib-illiad",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--reason",
        "spam",
        "--ticket",
        "not-a-ticket",
    )
    assert result.code == 1, result
    assert "schema.pattern: status_ticket: 'not-a-ticket'" in result.stderr, result
    assert "the edit would make the record invalid; nothing was written" in result.stderr
    assert path.read_bytes() == before
    result = run_cli(
        "retire",
        "lib-illiad",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--reason",
        "request",
        "--date",
        "2026-12-01",
    )
    assert result.code == 1, result  # a status date after --as-of
    assert "status.date-in-future" in result.stderr, result
    assert path.read_bytes() == before


def test_renew_refuses_a_term_longer_than_policy(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    path = inventory / "devices/libraries/lib-hodges-3f-copier.yaml"
    before = path.read_bytes()
    result = run_cli(
        "renew",
        "lib-hodges-3f-copier",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--approved-on",
        "2026-11-29",
        "--expires",
        "2027-12-01",
    )
    assert result.code == 1, result
    assert (
        "a term of 367 days is longer than the site allows (policy.max_exception_days: 366)"
        in result.stderr
    ), result
    assert path.read_bytes() == before
    result = run_cli(
        "renew",
        "lib-hodges-3f-copier",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--approved-on",
        "2026-11-29",
        "--expires",
        "2027-11-30",
    )
    assert result.code == 0, result
    assert "\n-  expires_on: 2027-06-15\n" in result.stdout, result
    assert "\n+  approved_on: 2026-11-29\n+  expires_on: 2027-11-30\n" in result.stdout, result


def test_unknown_records_and_repeated_edits(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "retire", "no-such-device", "--inventory", str(inventory), "--reason", "inactive"
    )
    assert result.code == 2, result
    assert "no record named no-such-device" in result.stderr
    args = ("--inventory", str(inventory), "--as-of", AS_OF, "--reason", "inactive")
    assert run_cli("retire", "lib-gate-counter", *args).code == 0
    again = run_cli("retire", "lib-gate-counter", *args)
    assert again.code == 1, again
    assert "already retired" in again.stderr
    revoked = (
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--reason",
        "spam",
        "--ticket",
        "SEC-4412",
    )
    same = run_cli("revoke", "eng-rhodes-lab-mfd", *revoked, "--date", "2026-10-02")
    assert same.code == 0, same
    assert same.stdout == (
        "inventory/devices/engineering/eng-rhodes-lab-mfd.yaml: already revoked (spam, SEC-4412, "
        "2026-10-02); nothing changed\n"
    ).replace("inventory/", f"{_shown(inventory)}/")


def _shown(inventory: Path) -> str:
    return display_path(inventory)


def _edit(run_cli, inventory: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli(*args[:2], "--inventory", str(inventory), "--as-of", AS_OF, *args[2:])


def test_a_second_revoke_keeps_the_first_on_record(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    path = inventory / "devices/libraries/lib-gate-counter.yaml"
    first = _edit(run_cli, inventory, "revoke", "lib-gate-counter", "--reason", "spam",
                  "--ticket", "SEC-1", "--date", "2026-11-01")  # fmt: skip
    assert first.code == 0, first
    text = path.read_text()
    again = _edit(run_cli, inventory, "revoke", "lib-gate-counter", "--reason", "phishing",
                  "--ticket", "SEC-2")  # fmt: skip
    assert again.code == 1, again
    assert "already revoked (spam, 2026-11-01, SEC-1); the first revocation stays" in again.stderr
    assert path.read_text() == text


def test_suspend_then_reinstate(inventory: Path, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = inventory / "devices/libraries/lib-hodges-3f-copier.yaml"
    original = path.read_text()
    done = _edit(run_cli, inventory, "suspend", "lib-hodges-3f-copier", "--reason",
                 "investigation", "--ticket", "SEC-7")  # fmt: skip
    assert done.code == 0, done
    assert "+status: suspended\n+status_reason: investigation\n+status_date: 2026-11-29\n" in (
        done.stdout
    )
    out = tmp_path / "out"
    assert (
        run_cli("compile", "--inventory", str(inventory), "--as-of", AS_OF, "--out", str(out)).code
        == 0
    )
    refused = (out / "postfix/refused_clients").read_text()
    assert "10.20.30.41\tREJECT relay access suspended" in refused
    assert "10.20.30.41" not in (out / "postfix/legacy_clients").read_text()
    # A suspended record is not suspended twice, nor revoked records reinstated.
    twice = _edit(run_cli, inventory, "suspend", "lib-hodges-3f-copier", "--reason", "spam",
                  "--ticket", "SEC-8")  # fmt: skip
    assert twice.code == 1 and "only an active record is suspended" in twice.stderr
    back = _edit(run_cli, inventory, "reinstate", "lib-hodges-3f-copier")
    assert back.code == 0, back
    assert path.read_text() == original  # every byte as before the suspension
    revoked = _edit(run_cli, inventory, "revoke", "lib-gate-counter", "--reason", "spam",
                    "--ticket", "SEC-9")  # fmt: skip
    assert revoked.code == 0
    refused_back = _edit(run_cli, inventory, "reinstate", "lib-gate-counter")
    assert refused_back.code == 1
    assert "only a suspended record is reinstated (a revoked device needs a new request)" in (
        refused_back.stderr
    )


def test_review_with_a_missing_store_is_a_usage_error(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    missing = inventory.parent / "no-such.sqlite"
    result = run_cli(
        "review", "--inventory", str(inventory), "--as-of", AS_OF, "--db", str(missing)
    )
    assert result.code == 2, result
    assert "no activity store there" in result.stderr
    assert not missing.exists()


def _counting_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = edit.load

    def counted(*args: object, **kwargs: object) -> object:
        calls.append("overlay" if kwargs.get("source") is not None else "as it stands")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(edit, "load", counted)
    return calls


def test_a_clean_edit_validates_once_and_writes(  # type: ignore[no-untyped-def]
    inventory: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting_loads(monkeypatch)
    path = inventory / "devices/libraries/lib-illiad.yaml"
    flags = ["--inventory", str(inventory), "--as-of", AS_OF, "--reason", "spam"]
    result = run_cli("revoke", "lib-illiad", *flags, "--ticket", "SEC-1234")
    assert result.code == 0, result
    assert calls == ["overlay"]
    assert "status: revoked" in path.read_text("utf-8")


def test_a_record_already_broken_can_still_be_revoked(  # type: ignore[no-untyped-def]
    inventory: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error the record already had does not block an edit; only added ones do."""
    path = inventory / "devices/libraries/lib-illiad.yaml"
    path.write_text(path.read_text("utf-8") + "bogus_field: 1\n", "utf-8")  # an error already
    calls = _counting_loads(monkeypatch)
    flags = ["--inventory", str(inventory), "--as-of", AS_OF, "--reason", "spam"]
    result = run_cli("revoke", "lib-illiad", *flags, "--ticket", "SEC-1234")
    assert result.code == 1, result  # the inventory still has the old error
    assert calls == ["overlay", "as it stands"]  # the second only to tell old from new
    assert "status: revoked" in path.read_text("utf-8")
    assert "schema.unknown-field" in result.stdout


def test_a_file_changed_while_it_was_checked_is_not_overwritten(  # type: ignore[no-untyped-def]
    inventory: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = inventory / "devices/libraries/lib-illiad.yaml"
    real = edit.check

    def meanwhile(*args: object, **kwargs: object) -> object:
        checked = real(*args, **kwargs)  # type: ignore[arg-type]
        path.write_text(path.read_text("utf-8") + "# someone else\n", "utf-8")
        return checked

    monkeypatch.setattr(edit, "check", meanwhile)
    flags = ["--inventory", str(inventory), "--as-of", AS_OF, "--reason", "spam"]
    result = run_cli("revoke", "lib-illiad", *flags, "--ticket", "SEC-1234")
    assert result.code != 0, result
    assert "changed while it was being checked" in result.stderr
    assert path.read_text("utf-8").endswith("# someone else\n")
    assert "status: revoked" not in path.read_text("utf-8")
