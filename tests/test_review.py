"""The retention review on a fixed --as-of: every category, every format, the notices.

The store is filled the way an operator fills it: a relay log (RFC 3339
timestamps) ingested with ``relaygate activity ingest``. The inventory is
the example campus with four edits that make one case each.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from relaygate.lifecycle import review
from relaygate.model import Status
from relaygate.pipeline import display_path, validate
from tests.conftest import AS_OF
from tests.test_activity import Log, at


def _send(log: Log, when: str, address: str, login: str | None = None, times: int = 1) -> None:
    for _ in range(times):
        queue_id = f"C{len(log.lines):05X}"  # unique: the log only grows
        log.start(at(when), address, queue_id, login)
        log.line(
            at(when), "qmgr", f"{queue_id}: from=<x@example.edu>, size=900, nrcpt=1 (queue active)"
        )


def _edit(inventory: Path, relative: str, old: str, new: str) -> None:
    path = inventory / "devices" / relative
    text = path.read_text()
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new))


@pytest.fixture
def campus(inventory: Path, run_cli) -> Path:  # type: ignore[no-untyped-def]
    """The example inventory with one case per category, and its activity store."""
    _edit(
        inventory,
        "medicine/med-pathology-scanner.yaml",
        "expires_on: 2027-11-02",
        "expires_on: 2026-11-20",
    )
    _edit(
        inventory,
        "business-office/bus-ap-mfd.yaml",
        "expires_on: 2027-07-21",
        "expires_on: 2026-12-15",
    )
    # A legacy server given as a prefix: its logged addresses are summed.
    _edit(
        inventory,
        "medicine/med-pacs-reporting-server.yaml",
        "address: 10.60.33.100",
        "address: 10.60.33.96/29",
    )
    # Approved long enough ago to be a removal candidate if it never sends unauthenticated.
    _edit(
        inventory,
        "engineering/eng-me-shop-mfd.yaml",
        "  approved_on: 2026-06-02\n  expires_on: 2027-06-01",
        "  approved_on: 2025-11-20\n  expires_on: 2026-11-20",
    )
    devices = validate(inventory, AS_OF_DATE).devices
    special = {
        "lib-hodges-3f-copier",
        "lib-special-collections-scanner",
        "lib-illiad",
        "lib-gate-counter",
        "med-pacs-reporting-server",
        "oit-zabbix-server",
        "eng-perkins-2f-copier",
        "eng-me-shop-mfd",
    }
    log = Log("smtp-relay-1", "rfc3339")
    _send(log, "2025-10-01 08:00:00", "10.20.30.41")  # the first day the logs cover
    _send(log, "2025-11-01 09:00:00", "10.20.30.41")
    _send(log, "2025-12-10 10:00:00", "10.20.30.57")
    for device in devices:
        if device.status is not Status.ACTIVE or device.name in special:
            continue
        if device.is_legacy:
            _send(log, "2026-11-20 12:00:00", device.address)
        else:
            _send(log, "2026-11-20 12:00:00", "10.9.9.9", login=device.account)
    log.reject(at("2026-11-20 13:00:00"), "10.20.30.41")  # rejects are never activity
    log.reject(at("2026-11-21 13:00:00"), "10.20.30.41")
    _send(log, "2026-11-27 10:00:00", "10.20.30.88", times=60)  # limit: the floor, 50 a day
    # 40 is 20x its estimate of 2, but under its limit (the site floor): not a volume item.
    _send(log, "2026-11-24 10:00:00", "10.20.30.88", times=40)
    _send(log, "2026-11-20 10:00:00", "10.20.30.88")
    _send(log, "2026-11-26 10:00:00", "10.60.33.98", times=700)  # 1300 > 3 x 120 together
    _send(log, "2026-11-26 11:00:00", "10.60.33.99", times=600)
    _send(log, "2026-11-25 11:00:00", "10.60.33.100", times=2)  # outside the /29
    _send(log, "2026-11-28 09:00:00", "10.9.9.10", login="SVC-OIT-Zabbix@example.edu")
    _send(log, "2026-10-15 09:00:00", "10.40.32.77", times=3)  # revoked on 2026-10-02
    # Only ever refused: it tries to send and every attempt is rejected.
    log.reject(at("2026-11-10 09:00:00"), "10.40.32.15")
    log.reject(at("2026-11-11 09:00:00"), "10.40.32.15")
    # Mail from an IP-only device's address that authenticated is some login's, not the
    # device's legacy use: the device stays never seen.
    _send(log, "2026-11-20 12:00:00", "2001:db8:1040:320::1f", login="svc-oit-zabbix@example.edu")
    # Accepted from clients no record covers; loopback (a content filter re-injecting) is not.
    _send(log, "2026-11-15 10:00:00", "10.99.0.5", times=2)
    _send(log, "2026-11-16 10:00:00", "10.9.9.11", login="svc-ghost@example.edu")
    _send(log, "2026-11-16 10:00:00", "127.0.0.1")
    _send(log, "2026-11-16 11:00:00", "10.1.0.26")  # smtp-relay-2 handing mail on: no sender
    path = inventory.parent / "relay.log"
    path.write_text(log.text())
    # The second relay of site.yaml logged over the same days (refusals only): without its
    # logs no silence could be proven.
    other = Log("smtp-relay-2", "rfc3339")
    other.reject(at("2025-10-01 07:00:00"), "192.0.2.99")
    other.reject(at("2026-11-28 07:00:00"), "192.0.2.99")
    second = inventory.parent / "relay2.log"
    second.write_text(other.text())
    result = run_cli("activity", "ingest", str(path), str(second), "--inventory", str(inventory))
    assert result.code == 0, result
    return inventory


AS_OF_DATE = __import__("datetime").date.fromisoformat(AS_OF)

EXPECTED = {
    "inactive": ["lib-hodges-3f-copier"],
    "never-seen": ["eng-me-shop-mfd", "lib-illiad"],
    "only-rejected": ["eng-perkins-2f-copier"],
    "silence-unknown": [],
    "notify": ["lib-special-collections-scanner"],
    "exception-expired": ["eng-me-shop-mfd", "med-pathology-scanner"],
    "exception-expiring": ["bus-ap-mfd"],
    "volume": ["lib-gate-counter", "med-pacs-reporting-server"],
    "still-sending": ["eng-rhodes-lab-mfd"],
    "unknown-sender": ["10.99.0.5", "svc-ghost@example.edu"],
}


def _by_category(items: list[dict[str, object]]) -> dict[str, list[object]]:
    found: dict[str, list[object]] = {}
    for item in items:
        found.setdefault(str(item["category"]), []).append(item["name"])
    return found


def test_every_category_on_a_fixed_day(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("review", "--inventory", str(campus), "--as-of", AS_OF, "--format", "json")
    assert result.code == 1, result  # removal candidates, expired exception, volume: action
    payload = json.loads(result.stdout)
    assert _by_category(payload["items"]) == {c: n for c, n in EXPECTED.items() if n}
    items = {(i["category"], i["name"]): i for i in payload["items"]}
    hodges = items[("inactive", "lib-hodges-3f-copier")]
    assert (hodges["last_accepted"], hodges["days_silent"], hodges["rejected"]) == (
        "2025-11-01",
        393,
        2,
    )
    assert hodges["contact_email"] == "sroe@example.edu"
    illiad = items[("never-seen", "lib-illiad")]
    assert (illiad["last_accepted"], illiad["silent_since"], illiad["days_silent"]) == (
        None,
        "2025-10-01",
        424,
    )
    scanner = items[("notify", "lib-special-collections-scanner")]
    assert (scanner["last_accepted"], scanner["days_silent"]) == ("2025-12-10", 354)
    assert items[("exception-expired", "med-pathology-scanner")]["expires_on"] == "2026-11-20"
    assert items[("exception-expiring", "bus-ap-mfd")]["expires_on"] == "2026-12-15"
    # Where the written acknowledgment lives, for whoever renews or retires it.
    assert items[("exception-expiring", "bus-ap-mfd")]["detail"].endswith(
        "approved by Chris Nakamura, acknowledgment ACK-2026-0296)"
    )
    gate = items[("volume", "lib-gate-counter")]
    assert (gate["peak_day"], gate["peak_accepted"], gate["volume_per_day"], gate["limit"]) == (
        "2026-11-27",
        60,
        2,
        50,
    )
    assert gate["detail"] == (
        "60 messages accepted on 2026-11-27, above its daily limit of 50 (site floor 50"
        " (estimate 2 x 3 = 6)); 1 day above it in the last 365 days"
    )
    pacs = items[("volume", "med-pacs-reporting-server")]
    assert (pacs["peak_day"], pacs["peak_accepted"], pacs["limit"]) == ("2026-11-26", 1300, 360)
    assert items[("still-sending", "eng-rhodes-lab-mfd")]["last_accepted"] == "2026-10-15"
    assert payload["coverage"] == {
        "first_day": "2025-10-01",
        "last_day": "2026-11-28",
        "files": 2,
        "relays": {
            "smtp-relay-1": [["2025-10-01", "2026-11-28"]],
            "smtp-relay-2": [["2025-10-01", "2026-11-28"]],
        },
    }
    assert payload["counts"] == {c: len(n) for c, n in EXPECTED.items()}
    # The edits above break validation (an expired exception; a prefix NetReg does not know):
    # the review still runs, over every record that could be read, and says so.
    assert any("validation errors" in note for note in payload["notes"]), payload["notes"]


def test_text_format_lines(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("review", "--inventory", str(campus), "--as-of", AS_OF)
    assert result.code == 1, result
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "relaygate review of Example University as of 2026-11-29: inactivity window 365 days, "
        "warning 30 days, volume alert above the daily limit"
    )
    assert lines[1].startswith("logs: 2025-10-01 .. 2026-11-28 from 2 files ("), lines[1]
    assert lines[2:4] == [
        "logs of relay smtp-relay-1: 2025-10-01 .. 2026-11-28",
        "logs of relay smtp-relay-2: 2025-10-01 .. 2026-11-28",
    ], lines
    assert (
        "  lib-hodges-3f-copier (libraries, 10.20.30.41): last accepted mail 2025-11-01, 393 days "
        "ago (queue id C00004 on smtp-relay-1, from x@example.edu); 2 rejected attempts; "
        "contact Sam Roe <sroe@example.edu>"
    ) in lines, result.stdout
    assert (
        "  lib-illiad (libraries, svc-lib-illiad@example.edu): no accepted mail in the logs "
        "(2025-10-01 .. 2026-11-28); approval day unknown (not a git checkout); silent for 424 "
        "days; contact Riley Chen <rchen@example.edu>"
    ) in lines, result.stdout
    assert lines[-1] == (
        "34 records reviewed: 1 inactive, 2 never-seen, 1 only-rejected, 1 notify, "
        "2 exception-expired, 1 exception-expiring, 2 volume, 1 still-sending, 2 unknown-sender"
    )


def test_csv_and_markdown_formats(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("review", "--inventory", str(campus), "--as-of", AS_OF, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == list(review.CSV_COLUMNS)
    assert [(r["category"], r["name"]) for r in rows] == [
        (c, n) for c, names in EXPECTED.items() for n in names
    ]
    assert rows[0]["days_silent"] == "393" and rows[0]["expires_on"] == ""
    result = run_cli("review", "--inventory", str(campus), "--as-of", AS_OF, "--format", "markdown")
    assert "## volume (2)" in result.stdout
    assert (
        "| `lib-gate-counter` | libraries | `10.20.30.88` | 60 messages accepted on 2026-11-27, "
        "above its daily limit of 50 (site floor 50 (estimate 2 x 3 = 6)); 1 day above it in the"
        " last 365 days |" in result.stdout
    )


def test_an_earlier_as_of_sees_only_days_up_to_it(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "review", "--inventory", str(campus), "--as-of", "2026-11-26", "--format", "json"
    )
    payload = json.loads(result.stdout)
    found = _by_category(payload["items"])
    # 2026-11-27's burst and 2026-11-28's zabbix mail are in the future of that day.
    assert "lib-gate-counter" not in found.get("volume", [])
    assert found["volume"] == ["med-pacs-reporting-server"]
    # 2025-11-01 is 390 days before 2026-11-26: still inactive.
    assert found["inactive"] == ["lib-hodges-3f-copier"]


def test_a_stale_store_is_called_out(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "review", "--inventory", str(campus), "--as-of", "2026-12-20", "--format", "json"
    )
    notes = json.loads(result.stdout)["notes"]
    assert (
        "the newest log line is from 2026-11-28, 22 days before 2026-12-20: silence after it is "
        "unknown (ingest recent logs)"
    ) in notes


def test_notices_one_per_contact(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    folder = campus.parent / "notices"
    folder.mkdir()
    (folder / "gone@example.edu.txt").write_text("To: x\nX-Relaygate-Review: as-of 2026-01-01\n")
    (folder / "README.txt").write_text("kept: not a notice\n")
    site = campus / "site.yaml"
    site.write_text(
        site.read_text().replace(
            '  platform_team: "@example-edu/mail-platform"\n',
            '  platform_team: "@example-edu/mail-platform"\n'
            "  notices: {from_name: Mail Platform Team, from: mail-platform@example.edu,"
            " reply_to: relay-requests@example.edu}\n",
        )
    )
    result = run_cli(
        "review", "--inventory", str(campus), "--as-of", AS_OF, "--notices", str(folder)
    )
    assert result.code == 1, result
    assert result.stderr.strip().endswith("wrote 5 notices to " + display_path(folder)), result
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.txt",
        "cmorgan@example.edu.txt",
        "ktran@example.edu.txt",
        "rchen@example.edu.txt",
        "rhale@example.edu.txt",
        "sroe@example.edu.txt",
    ]
    text = (folder / "sroe@example.edu.txt").read_text()
    # From and Reply-To from site.yaml; the approvers of the exceptions are copied.
    assert text.startswith(
        "From: Mail Platform Team <mail-platform@example.edu>\n"
        "To: Sam Roe <sroe@example.edu>\n"
        "Cc: Dr. Alex Dean <adean@example.edu>, Morgan Ellis <mellis@example.edu>\n"
        "Reply-To: relay-requests@example.edu\n"
        "Subject: SMTP relay access review: 2 devices need your attention\n"
        "X-Relaygate-Review: as-of 2026-11-29\n"
        "Content-Type: text/plain; charset=utf-8\n\nDear Sam Roe,\n"
    ), text
    assert (
        "* lib-hodges-3f-copier (Xerox AltaLink C8170,\n"
        "  lib-hodges-3f-copier.lib.example.edu, 10.20.30.41)\n"
        "  last accepted mail 2025-11-01, 393 days ago (queue id C00004 on\n"
        "  smtp-relay-1, from x@example.edu); 2 rejected attempts.\n"
        "  What to do: confirm it still needs the relay, or retire it (`relaygate\n"
        "  retire --reason inactive`).\n"
    ) in text, text
    assert max(len(line) for line in text.splitlines()) <= 72
    assert "* lib-special-collections-scanner (" in text
    assert "it reaches the 365-day limit in 11 days" in " ".join(text.split())
    # The revoked device still sending is an operator matter, not a notice; a device that is
    # only ever refused is its contact's to fix.
    assert "eng-rhodes-lab-mfd" not in "".join(p.read_text() for p in folder.iterdir())
    ktran = " ".join((folder / "ktran@example.edu.txt").read_text().split())
    assert "* eng-perkins-2f-copier (" in ktran
    assert "no accepted mail in the logs, but 2 rejected attempts (last 2026-11-11 on" in ktran


def test_git_history_dates_new_records(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = campus.parent
    env = dict(
        os.environ,
        GIT_AUTHOR_DATE="2026-11-01T12:00:00+00:00",
        GIT_COMMITTER_DATE="2026-11-01T12:00:00+00:00",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.edu",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.edu",
    )
    for command in (["init", "-q"], ["add", "inventory"], ["commit", "-q", "-m", "records"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True, env=env, capture_output=True)
    result = run_cli("review", "--inventory", str(campus), "--as-of", AS_OF, "--format", "json")
    found = _by_category(json.loads(result.stdout)["items"])
    # lib-illiad was added on 2026-11-01: silent 28 days, not a removal candidate.
    assert "never-seen" not in found
    assert found["inactive"] == ["lib-hodges-3f-copier"]
    dates, known = review.record_dates(campus)
    assert known
    assert (
        dates[display_path(campus / "devices/libraries/lib-illiad.yaml")].isoformat()
        == "2026-11-01"
    )


def test_without_a_store_only_exceptions_are_reviewed(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    _edit(
        inventory,
        "business-office/bus-ap-mfd.yaml",
        "expires_on: 2027-07-21",
        "expires_on: 2026-12-15",
    )
    result = run_cli("review", "--inventory", str(inventory), "--as-of", AS_OF)
    assert result.code == 0, result  # an exception expiring soon is a warning
    assert "note: no activity store at " in result.stdout
    assert result.stdout.splitlines()[-1] == "34 records reviewed: 1 exception-expiring"


def _commit_inventory(inventory: Path, when: str) -> None:
    env = dict(
        os.environ,
        GIT_AUTHOR_DATE=when,
        GIT_COMMITTER_DATE=when,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.edu",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.edu",
    )
    repo = inventory.parent
    for command in (["init", "-q"], ["add", "inventory"], ["commit", "-q", "-m", "records"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True, env=env, capture_output=True)


def _ingest(run_cli, inventory: Path, *logs: Log) -> None:  # type: ignore[no-untyped-def]
    paths = []
    for index, log in enumerate(logs):
        path = inventory.parent / f"relay{index}.log"
        path.write_text(log.text())
        paths.append(str(path))
    result = run_cli("activity", "ingest", *paths, "--inventory", str(inventory))
    assert result.code == 0, result


def test_five_days_of_logs_prove_no_removal(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """Five days of logs of both relays: nothing may be called a removal candidate."""
    _commit_inventory(inventory, "2025-01-15T12:00:00+00:00")  # every record approved then
    relays = [Log("smtp-relay-1", "rfc3339"), Log("smtp-relay-2", "rfc3339")]
    for day in range(24, 29):
        for log in relays:
            _send(log, f"2026-11-{day} 09:00:00", "10.9.9.9", login="svc-oit-zabbix@example.edu")
    _ingest(run_cli, inventory, *relays)
    result = run_cli("review", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "json")
    payload = json.loads(result.stdout)
    found = _by_category(payload["items"])
    assert "never-seen" not in found and "inactive" not in found, found
    # Devices approved long ago are silent for the window as far as anyone knows: said so.
    unknown = {i["name"]: i for i in payload["items"] if i["category"] == "silence-unknown"}
    assert unknown, payload["items"]
    hodges = unknown["lib-hodges-3f-copier"]
    assert hodges["covered_days"] == 5
    assert hodges["detail"] == (
        "no accepted mail in the logs (2026-11-24 .. 2026-11-28); approved 2025-01-15; silent "
        "for 683 days; the logs cover 5 days of that silence on every relay (2026-11-24 .. "
        "2026-11-28), silence unknown since 2025-01-16 on relay smtp-relay-1"
    ), hodges
    assert len(unknown) >= 20, sorted(unknown)
    # Unproven silence is a warning: nothing here needs action now.
    assert result.code == 0, result


def test_silence_after_the_logs_end_is_unknown(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    relays = [Log("smtp-relay-1", "rfc3339"), Log("smtp-relay-2", "rfc3339")]
    for log in relays:
        log.reject(at("2025-10-01 08:00:00"), "192.0.2.99")
        log.reject(at("2025-12-01 08:00:00"), "192.0.2.99")
    _send(relays[0], "2025-11-01 09:00:00", "10.20.30.41")  # lib-hodges-3f-copier
    _ingest(run_cli, inventory, *relays)
    result = run_cli("review", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "json")
    payload = json.loads(result.stdout)
    items = {(i["category"], i["name"]): i for i in payload["items"]}
    assert ("inactive", "lib-hodges-3f-copier") not in items
    hodges = items[("silence-unknown", "lib-hodges-3f-copier")]
    assert (hodges["days_silent"], hodges["covered_days"]) == (393, 30)
    assert "silence unknown since 2025-12-02 on relay smtp-relay-1" in hodges["detail"], hodges
    assert (
        "the newest log line is from 2025-12-01, 363 days before 2026-11-29: silence after it is "
        "unknown (ingest recent logs)"
    ) in payload["notes"]
    # Positive control: the same silence, covered by logs to the day before --as-of.
    more = [Log("smtp-relay-1", "rfc3339"), Log("smtp-relay-2", "rfc3339")]
    for log in more:
        log.reject(at("2025-12-01 09:00:00"), "192.0.2.98")
        log.reject(at("2026-11-28 09:00:00"), "192.0.2.98")
    _ingest_more = [inventory.parent / "more0.log", inventory.parent / "more1.log"]
    for path, log in zip(_ingest_more, more, strict=True):
        path.write_text(log.text())
    done = run_cli("activity", "ingest", *map(str, _ingest_more), "--inventory", str(inventory))
    assert done.code == 0, done
    again = run_cli("review", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "json")
    items = {(i["category"], i["name"]): i for i in json.loads(again.stdout)["items"]}
    assert items[("inactive", "lib-hodges-3f-copier")]["covered_days"] == 392


def test_relays_in_the_logs_and_in_site_yaml_are_compared(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    one = Log("smtp-relay-1.example.edu", "rfc3339")  # the FQDN names the same relay
    stray = Log("mx-old", "rfc3339")
    for log in (one, stray):
        log.reject(at("2025-10-01 08:00:00"), "192.0.2.99")
        log.reject(at("2026-11-28 08:00:00"), "192.0.2.99")
    _ingest(run_cli, inventory, one, stray)
    result = run_cli("review", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "json")
    payload = json.loads(result.stdout)
    assert (
        "relay smtp-relay-2 (site.yaml) has no log lines in the store: silence cannot be proven "
        "until its logs are ingested"
    ) in payload["notes"], payload["notes"]
    assert (
        "the logs name relay 'mx-old', which site.yaml does not list: its mail is counted, but "
        "its logs prove no silence"
    ) in payload["notes"], payload["notes"]
    assert not any("smtp-relay-1" in note for note in payload["notes"]), payload["notes"]
    found = _by_category(payload["items"])
    assert "never-seen" not in found and "inactive" not in found, found
    unknown = [i for i in payload["items"] if i["category"] == "silence-unknown"]
    assert unknown and all(
        "silence unknown since" in i["detail"] and "on relay smtp-relay-2" in i["detail"]
        for i in unknown
    ), unknown


def test_volume_factor_multiplies_the_compiled_limit(campus: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("review", "--inventory", str(campus), "--as-of", AS_OF, "--volume-factor", "2")
    assert result.stdout.splitlines()[0].endswith("volume alert above 2x the daily limit")
    payload = json.loads(
        run_cli(
            "review",
            "--inventory",
            str(campus),
            "--as-of",
            AS_OF,
            "--volume-factor",
            "2",
            "--format",
            "json",
        ).stdout
    )
    volume = [i for i in payload["items"] if i["category"] == "volume"]
    # 60 is above lib-gate-counter's limit of 50 but not above 2 x 50; 1300 > 2 x 360.
    assert [(i["name"], i["limit"]) for i in volume] == [("med-pacs-reporting-server", 360)]
    assert volume[0]["detail"].startswith(
        "1300 messages accepted on 2026-11-26, above 2x its daily limit of 360 (estimate"
    )
