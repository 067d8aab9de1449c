"""``relaygate query NAME`` with an activity store: the device's last messages and volume."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import AS_OF
from tests.test_activity import Log, at


def test_query_shows_last_accepted_last_rejected_and_30_days(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    before = run_cli(
        "query", "lib-hodges-3f-copier", "--inventory", str(inventory), "--as-of", AS_OF
    )
    assert before.code == 0, before
    assert "activity:" not in before.stdout  # no store: nothing is claimed
    one = Log("smtp-relay-1")
    two = Log("smtp-relay-2", "rfc3339")
    one.accept(at("2026-10-01 09:00:00"), "10.20.30.41", "9A0")  # before the 30 days
    one.accept(at("2026-11-02 09:00:00"), "10.20.30.41", "9A1")
    one.accept(at("2026-11-20 09:00:00"), "10.20.30.41", "9A2", sender="scans@lib.example.edu")
    two.accept(at("2026-11-20 08:00:00"), "10.20.30.41", "9A3")
    two.reject(at("2026-11-25 10:00:00"), "10.20.30.41")
    # Authenticated mail from its address is a login's, not this IP-only copier's.
    one.accept(at("2026-11-27 09:00:00"), "10.20.30.41", "9A4", login="svc-lib-illiad@example.edu")
    paths = []
    for name, log in (("one.log", one), ("two.log", two)):
        path = inventory.parent / name
        path.write_text(log.text())
        paths.append(str(path))
    ingested = run_cli(
        "activity", "ingest", *paths, "--inventory", str(inventory), "--year", "2026"
    )
    assert ingested.code == 0, ingested
    text = run_cli("query", "lib-hodges-3f-copier", "--inventory", str(inventory), "--as-of", AS_OF)
    assert text.code == 0, text
    lines = text.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("  activity:  from ")))
    assert lines[start].endswith(", logs until 2026-11-27"), lines[start]
    assert lines[start + 1 : start + 4] == [
        "    last accepted: 2026-11-20 09:00:00 on smtp-relay-1, from <scans@lib.example.edu> "
        "(queue id 9A2)",
        "    last rejected: 2026-11-25 10:00:00 on smtp-relay-2: RCPT from unknown[10.20.30.41]: "
        "554 5.7.1 <x@gmail.com>: Relay access denied",
        "    last 30 days (2026-10-31 .. 2026-11-29): 3 accepted, 1 rejected",
    ], text.stdout
    data = run_cli(
        "query",
        "lib-hodges-3f-copier",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        "--format",
        "json",
    )
    activity = json.loads(data.stdout)["matches"][0]["activity"]
    assert activity["last_accepted"] == {
        "day": "2026-11-20",
        "time": "09:00:00",
        "relay": "smtp-relay-1",
        "queue_id": "9A2",
        "sender": "scans@lib.example.edu",
    }
    assert activity["last_rejected"]["day"] == "2026-11-25"
    assert activity["last_rejected"]["relay"] == "smtp-relay-2"
    assert activity["recent"] == {
        "days": 30,
        "since": "2026-10-31",
        "until": "2026-11-29",
        "accepted": 3,
        "rejected": 1,
    }
    # The authenticated device is found by its login: the message from the copier's address.
    illiad = run_cli(
        "query", "lib-illiad", "--inventory", str(inventory), "--as-of", AS_OF, "--format", "json"
    )
    seen = json.loads(illiad.stdout)["matches"][0]["activity"]
    assert (seen["last_accepted"]["day"], seen["recent"]["accepted"]) == ("2026-11-27", 1)
    assert seen["last_rejected"] is None
